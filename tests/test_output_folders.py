"""`--out` and `--overwrite` never destroy what prefloop did not write.

A careless `rlhf export --out <the workspace> --overwrite` once replaced the database,
the models and rlhf.toml with a dataset. These tests run the real commands against a
real SQLite workspace and check what is left on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Judgment
from rlhf_train.atomic import check_output_folder, write_folder
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.export.writer import not_an_export
from rlhf_train.reward.evaluate import not_a_reward_report
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts


@pytest.fixture
def judged(sqlite_workspace, tiny_policy):
    store_prompts(sqlite_workspace, [f"Prompt {i}" for i in range(4)])
    generate_round(sqlite_workspace, round_request(tiny_policy, n_prompts=4), False)
    record_votes(sqlite_workspace, {i: [("ann", "A", 2)] for i in range(4)})
    return sqlite_workspace


def _export(workspace, capsys, out: Path | str, *flags: str) -> tuple[int, str]:
    code = main(["--workspace", str(workspace.root), "export", "--out", str(out), *flags])
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal"))
    }


def _judgments(workspace) -> int:
    with workspace.sessions() as session:
        return session.scalar(select(func.count(Judgment.id)))


def test_overwrite_refuses_the_workspace_and_its_ancestors(judged, capsys) -> None:
    root = judged.root
    before = {name for name in _snapshot(root)}
    assert "rlhf.toml" in before and any(name.endswith(".db") for name in before)
    for target in (root, root.parent, Path(os.path.relpath(root))):
        code, err = _export(judged, capsys, target, "--overwrite")
        assert code == 2, target
        assert "is the workspace or a folder that holds it" in err and err.count("\n") == 1
    link = root.parent / "link-to-workspace"
    link.symlink_to(root, target_is_directory=True)
    code, err = _export(judged, capsys, link, "--overwrite")
    assert code == 2 and "is the workspace" in err
    assert {name for name in _snapshot(root)} == before
    assert _judgments(judged) == 4


def test_overwrite_refuses_a_folder_holding_anything_else(judged, tmp_path, capsys) -> None:
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.tex").write_text("years of work")
    (mine / "manifest.json").write_text("{}")
    code, err = _export(judged, capsys, mine, "--overwrite")
    assert code == 2 and "is not an earlier prefloop export" in err and err.count("\n") == 1
    assert (mine / "notes" / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_an_earlier_export_but_not_one_with_extra_files(
    judged, tmp_path, capsys
) -> None:
    out = tmp_path / "exports" / "r1"
    assert _export(judged, capsys, out, "--format", "all")[0] == 0
    first = json.loads((out / "manifest.json").read_text())
    assert _export(judged, capsys, out, "--format", "jsonl", "--overwrite")[0] == 0
    assert not (out / "hf").exists() and (out / "data" / "train.jsonl").is_file()
    assert json.loads((out / "manifest.json").read_text())["options"]["formats"] == ["jsonl"]
    assert first["options"]["formats"] == ["hf", "jsonl", "parquet"]

    (out / "data" / "my-labels.csv").write_text("keep me")
    code, err = _export(judged, capsys, out, "--overwrite")
    assert code == 2 and "data/my-labels.csv" in err
    assert (out / "data" / "my-labels.csv").read_text() == "keep me"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_out_under_a_file_or_on_a_file_is_one_sentence(judged, tmp_path, capsys) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    code, err = _export(judged, capsys, plain / "sub" / "out")
    assert code == 2 and "which is a file, not a folder" in err and err.count("\n") == 1
    code, err = _export(judged, capsys, plain, "--overwrite")
    assert code == 2 and "is a file, not a folder" in err
    assert plain.read_text() == "x"


def _refusal_as_ordinary_user(out: Path) -> str:
    """check_output_folder's refusal of `out`, asked in a forked process that runs as the
    user nobody when the tests run as root (root may write anywhere)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        message = "no refusal"
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            check_output_folder(out, workspace_root=None, overwrite=False)
        except UserError as error:
            message = str(error)
        except BaseException as error:  # noqa: BLE001 - anything else is the test's failure
            message = f"unexpected {error!r}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)
    return message


def test_an_unwritable_folder_is_one_sentence() -> None:
    locked = Path(tempfile.mkdtemp(prefix="prefloop-locked-"))
    try:
        locked.chmod(0o555)
        message = _refusal_as_ordinary_user(locked / "out")
        assert "is not writable for this user" in message, message
    finally:
        locked.chmod(0o755)
        locked.rmdir()


def test_reports_replace_only_their_own_files(tmp_path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    for name in ("diagnostics.json", "calibration.png"):
        (report / name).write_text("old")
    assert not_a_reward_report(report) is None
    assert (
        check_output_folder(
            report, workspace_root=None, overwrite=True, foreign=not_a_reward_report
        )
        == report.resolve()
    )
    (report / "paper.pdf").write_text("mine")
    with pytest.raises(UserError, match="paper.pdf"):
        check_output_folder(
            report, workspace_root=None, overwrite=True, foreign=not_a_reward_report
        )
    # The policy report takes only a new or empty folder.
    with pytest.raises(UserError, match="already exists and is not empty"):
        check_output_folder(report, workspace_root=None, overwrite=True)
    assert not_an_export(report) is not None


def test_a_failed_write_leaves_the_old_folder_whole(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def fail(staging: Path) -> None:
        (staging / "half.txt").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_folder(target, fail, replace=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "old.txt").read_text() == "old"
