"""`rlhf export` and `rlhf import-preferences` from the command line."""

from __future__ import annotations

import json

from rlhf_train.cli import build_parser, main
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts


def _run(workspace, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--workspace", str(workspace.root), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_prints_counts_and_agreement(sqlite_workspace, tiny_policy, tmp_path, capsys):
    store_prompts(sqlite_workspace, [f"Prompt {i}" for i in range(6)])
    generate_round(sqlite_workspace, round_request(tiny_policy, n_prompts=6), False)
    record_votes(sqlite_workspace, {i: [("ann", "A", 2), ("bob", "A", 1)] for i in range(6)})
    out = tmp_path / "exp"
    code, stdout, _ = _run(
        sqlite_workspace,
        capsys,
        "export",
        "--out",
        str(out),
        "--rounds",
        "1",
        "--format",
        "all",
        "--test-fraction",
        "0.3",
    )
    assert code == 0
    assert "Exported" in stdout and "pairs exported" in stdout and "6" in stdout
    assert "Krippendorff's alpha" in stdout and "ann" in stdout and "bob" in stdout
    assert (out / "hf").is_dir() and (out / "data" / "train.parquet").is_file()

    code, _, err = _run(sqlite_workspace, capsys, "export", "--out", str(out))
    assert code == 2 and "already exists; pass --overwrite" in err and err.count("\n") == 1
    code, _, err = _run(
        sqlite_workspace, capsys, "export", "--out", str(tmp_path / "x"), "--min-votes", "5"
    )
    assert code == 2 and "Nothing is left to export" in err and not (tmp_path / "x").exists()
    code, _, err = _run(
        sqlite_workspace, capsys, "export", "--out", str(tmp_path / "y"), "--rounds", "1,x"
    )
    assert code == 2 and "not a list of round numbers" in err

    code, stdout, _ = _run(
        sqlite_workspace, capsys, "import-preferences", str(out / "data" / "train.jsonl")
    )
    assert code == 0 and "as round 2 (closed)" in stdout
    lines = (out / "data" / "train.jsonl").read_text().splitlines()
    assert f"Imported {len(lines)} preference pairs" in stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    code, _, err = _run(sqlite_workspace, capsys, "import-preferences", str(bad))
    assert code == 2 and "bad.jsonl line 1 has no 'rejected' column" in err


def test_export_help_has_examples() -> None:
    parser = build_parser()
    for command in ("export", "import-preferences"):
        action = next(
            a for a in parser._actions if getattr(a, "choices", None) and command in a.choices
        )
        assert "examples:" in action.choices[command].format_help()
