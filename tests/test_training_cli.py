"""The training commands as a user types them: `rlhf train sft`, `rlhf models merge`,
`rlhf models promote`, with tiny policies built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import TrainingRun
from db.registry import current_policy, find_model
from rlhf_train.cli import main
from tests.tiny_models import CORPUS

SETTINGS = [
    "--batch-size",
    "2",
    "--max-length",
    "32",
    "--learning-rate",
    "0.01",
    "--no-progress",
]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RLHF_RUNTIME_THREADS", "1")
    root = tmp_path / "ws"
    assert main(["--workspace", str(root), "init"]) == 0
    return root


@pytest.fixture
def demos(tmp_path: Path) -> Path:
    path = tmp_path / "demos.txt"
    path.write_text("\n".join(sorted(set(CORPUS)) * 4) + "\n", encoding="utf-8")
    return path


def rlhf(ws: Path, *args: str) -> int:
    return main(["--workspace", str(ws), *args])


def test_sft_lora_merge_and_promote(ws, demos, tiny_policy, capsys) -> None:
    code = rlhf(
        ws,
        "train",
        "sft",
        "--data",
        str(demos),
        "--policy",
        str(tiny_policy),
        "--lora",
        "--name",
        "demo-lora",
        "--max-steps",
        "3",
        *SETTINGS,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Held-out loss" in out and "rlhf models promote demo-lora" in out

    assert rlhf(ws, "models", "merge", "demo-lora") == 0
    assert "demo-lora-merged" in capsys.readouterr().out
    assert rlhf(ws, "models", "promote", "demo-lora-merged") == 0

    from rlhf_train.workspace import Workspace

    with Workspace.open(ws).sessions() as session:
        assert current_policy(session).name == "demo-lora-merged"
        merged = find_model(session, "demo-lora-merged")
        assert merged.parent.name == "demo-lora"
        assert (Path(merged.path) / "config.json").is_file()
        assert session.scalars(select(TrainingRun.status)).all() == ["succeeded"]
    assert rlhf(ws, "runs", "list") == 0
    assert "sft" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Pass exactly one source"),
        (["--data", "missing.txt"], "missing.txt"),
        (["--builtin", "imdb", "--lora", "--lora-targets", "no_such_proj"], "'no_such_proj'"),
        (["--builtin", "imdb", "--policy", "nobody/nothing"], "nobody/nothing"),
    ],
)
def test_sft_bad_input_exits_2_with_one_sentence(ws, tiny_policy, capsys, args, message):
    if "--policy" not in args:
        args = [*args, "--policy", str(tiny_policy)]
    code = rlhf(ws, "train", "sft", *args, "--max-steps", "1", *SETTINGS)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    from rlhf_train.workspace import Workspace

    with Workspace.open(ws).sessions() as session:
        assert session.scalars(select(TrainingRun)).all() == []


def test_merge_and_promote_refuse_what_they_cannot_do(ws, tiny_policy, capsys) -> None:
    assert rlhf(ws, "models", "register", "base", str(tiny_policy), "--kind", "policy") == 0
    capsys.readouterr()
    assert rlhf(ws, "models", "merge", "base") == 2
    assert "not a LoRA adapter" in capsys.readouterr().err
    assert rlhf(ws, "models", "promote", "nothing") == 2
    assert "no registered policy" in capsys.readouterr().err
