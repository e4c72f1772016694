"""A round's render mode (text or markdown): set by `rlhf generate --render` or the
[round] render setting, shown by `rlhf rounds show`, refused when unknown."""

from __future__ import annotations

import io
import sys

import pytest
from sqlalchemy import select

from db.engine import transaction
from db.errors import UserError
from db.models import Round
from db.round_admin import set_render, update_settings
from db.rounds import render_mode, round_summaries
from rlhf_train.cli import main
from rlhf_train.workspace import Workspace
from tests.tiny_models import build_tiny_policy

COMMON = ["--n-prompts", "2", "--max-new-tokens", "3", "--batch-size", "2", "--no-progress"]


@pytest.fixture
def run(tmp_path, db_url, monkeypatch, capsys):
    """Run `rlhf --workspace WS ARGS...` in-process on `db_url`; returns (code, out, err)."""
    monkeypatch.setenv("RLHF_DB_URL", db_url)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))

    def invoke(*args: str) -> tuple[int, str, str]:
        code = main(["--workspace", str(tmp_path / "ws"), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    invoke.workspace = tmp_path / "ws"
    return invoke


def _open(run) -> Workspace:
    return Workspace.open(run.workspace)


def _fails_with(result: tuple[int, str, str], expected: str) -> None:
    code, _out, err = result
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err


def _render(run) -> dict[int, str]:
    with _open(run).sessions() as session:
        return {r.number: r.render for r in session.scalars(select(Round))}


def test_generate_sets_the_render_mode_and_rounds_show_prints_it(run, tiny_policy) -> None:
    run("init")
    assert run("prompts", "builtin", "imdb", "--n", "10", "--words", "5")[0] == 0
    policy = ["--policy", str(tiny_policy)]
    code, out, _ = run("generate", "--round", "1", *policy, *COMMON, "--render", "markdown")
    assert code == 0 and "Round 1 shows its responses as markdown in the app." in out
    assert _render(run) == {1: "markdown"}
    code, out, _ = run("rounds", "show", "1")
    assert code == 0 and "shown as:        markdown (rendered Markdown" in out

    # Without the flag a new round takes the setting (default text), a resumed one keeps
    # its own; with it, a resumed round takes the flag's.
    assert run("generate", "--round", "2", *policy, *COMMON)[0] == 0
    assert run("generate", "--round", "1", *policy, *COMMON)[0] == 0
    assert _render(run) == {1: "markdown", 2: "text"}
    code, out, _ = run("generate", "--round", "2", *policy, *COMMON, "--render", "markdown")
    assert code == 0 and "nothing to generate" in out and "as markdown" in out
    assert _render(run) == {1: "markdown", 2: "markdown"}

    # A closed round refuses generation before its mode is touched.
    with transaction(_open(run).sessions) as session:
        session.scalar(select(Round).where(Round.number == 1)).status = "closed"
    _fails_with(
        run("generate", "--round", "1", *policy, *COMMON, "--render", "text"), "Round 1 is closed"
    )
    assert _render(run)[1] == "markdown"


def test_the_round_setting_is_the_default(run, tiny_policy, monkeypatch) -> None:
    run("init")
    run("prompts", "builtin", "imdb", "--n", "6", "--words", "5")
    monkeypatch.setenv("RLHF_ROUND_RENDER", "markdown")
    assert run("generate", "--round", "1", "--policy", str(tiny_policy), *COMMON)[0] == 0
    assert _render(run) == {1: "markdown"}
    monkeypatch.setenv("RLHF_ROUND_RENDER", "html")
    _fails_with(
        run("generate", "--round", "2", "--policy", str(tiny_policy), *COMMON),
        "round.render in the environment variable RLHF_ROUND_RENDER is 'html'; it must be "
        "text or markdown",
    )
    monkeypatch.delenv("RLHF_ROUND_RENDER")
    assert set(_render(run)) == {1}  # nothing created
    with pytest.raises(SystemExit):  # argparse refuses an unknown choice itself
        run("generate", "--round", "2", "--render", "html")


def test_round_admin_sets_and_refuses_render_modes(workspace) -> None:
    with transaction(workspace.sessions) as session:
        session.add(Round(number=1))
    with transaction(workspace.sessions) as session:
        assert render_mode(session, 1) == "text"  # the default
        assert render_mode(session, 99) == "text"  # a round that does not exist
        update_settings(session, 1, overlap=2, gold_rate=0.0, guidelines="", render="markdown")
    with workspace.sessions() as session:
        assert render_mode(session, 1) == "markdown"
        assert [s.render for s in round_summaries(session)] == ["markdown"]
    with transaction(workspace.sessions) as session:
        # Saving other settings without a mode keeps the mode.
        update_settings(session, 1, overlap=3, gold_rate=0.0, guidelines="x")
        assert render_mode(session, 1) == "markdown"
        with pytest.raises(UserError, match="Unknown render mode 'html'; use text or markdown."):
            set_render(session, 1, "html")


def test_an_arena_round_takes_the_render_flag(run, tiny_policy, tmp_path) -> None:
    other = build_tiny_policy(tmp_path / "other-policy", seed=1)
    run("init")
    run("prompts", "builtin", "imdb", "--n", "6", "--words", "5")
    arena = f"{tiny_policy},{other}"
    code, out, err = run(
        "generate", "--round", "1", "--arena", arena, *COMMON, "--render", "markdown"
    )
    assert code == 0, err
    assert _render(run) == {1: "markdown"}
    assert "shown as:        markdown" in run("rounds", "show", "1")[1]
