"""`rlhf up`: a fresh workspace ends with prompts, round 1 and one lead, and a second run
changes nothing."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from db.models import Pair, Prompt, User
from db.users import password_matches
from rlhf_train.cli import main
from rlhf_train.workspace import Workspace


def test_up_prepares_round_one_once(tmp_path, tiny_policy, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RLHF_MODELS_POLICY", str(tiny_policy))
    monkeypatch.setenv("RLHF_PROMPTS_N", "30")
    monkeypatch.setenv("RLHF_GENERATION_N_PROMPTS", "6")
    monkeypatch.setenv("RLHF_GENERATION_MAX_NEW_TOKENS", "4")
    args = ["--workspace", str(tmp_path / "ws"), "up", "--no-serve", "--no-progress"]

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Imported 30 imdb prompts." in out
    assert "Round 1: added 6 prompts, 12 samples" in out
    found = re.search(r"lead account 'lead' with password: (\S+)", out)
    assert found is not None
    password = found.group(1)
    assert len(password) >= 12

    workspace = Workspace.open(tmp_path / "ws")
    with workspace.sessions() as session:
        lead = session.scalar(select(User).where(User.role == "lead"))
        assert lead.name == "lead" and password_matches(lead.password_hash, password)
        assert session.scalar(select(func.count()).select_from(Prompt)) == 30
        pairs = session.scalar(select(func.count()).select_from(Pair))
    assert (tmp_path / "ws" / "rlhf.toml").is_file()

    assert main(args) == 0
    again = capsys.readouterr().out
    assert "password" not in again and "Imported" not in again
    assert "already has 6 prompts; nothing to generate" in again
    with workspace.sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
        assert session.scalar(select(func.count()).select_from(Pair)) == pairs


def test_each_workspace_gets_its_own_lead_password(tmp_path, tiny_policy, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_MODELS_POLICY", str(tiny_policy))
    monkeypatch.setenv("RLHF_PROMPTS_N", "5")
    monkeypatch.setenv("RLHF_GENERATION_N_PROMPTS", "2")
    monkeypatch.setenv("RLHF_GENERATION_MAX_NEW_TOKENS", "2")
    passwords = []
    for name in ("a", "b"):
        assert main(["--workspace", str(tmp_path / name), "up", "--no-serve", "--no-progress"]) == 0
        passwords.append(re.search(r"password: (\S+)", capsys.readouterr().out).group(1))
    assert passwords[0] != passwords[1]  # never a fixed default password
