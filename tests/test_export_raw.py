"""`rlhf export --raw` on real databases: one row per judgment, pseudonyms stable within
an export and different across exports, the formats, the card and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk
from sqlalchemy import select, update

from db.engine import transaction
from db.judgments import record_judgment
from db.models import Export, Judgment, Pair, User
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.export.raw import RawExportOptions, export_raw, pseudonyms
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts

N_PAIRS = 6
# Distinctive names, so that a leak into any exported file can be searched for.
ALICE, BOB = "alice-realname", "bob-realname"


@pytest.fixture
def judged(workspace, tiny_policy, tiny_policy_v2):
    """A round of new_vs_previous (and random) pairs between two policies, judged with
    every kind of choice; one judgment has flags, a left side B and time spent; one pair
    is gold."""
    store_prompts(workspace, [f"Raw prompt {i}" for i in range(N_PAIRS)])
    request = round_request(tiny_policy_v2, n_prompts=N_PAIRS, previous_policy=str(tiny_policy))
    generate_round(workspace, request, False)
    pair_ids = record_votes(
        workspace,
        {
            0: [(ALICE, "A", 3), (BOB, "B", 1)],
            1: [(ALICE, "tie", None), (BOB, "skip", None)],
            2: [(ALICE, "both_bad", None)],
            3: [(BOB, "skip", None)],
        },
    )
    with transaction(workspace.sessions) as session:
        alice = session.scalar(select(User.id).where(User.name == ALICE))
        record_judgment(
            session,
            alice,
            pair_ids[4],
            choice="B",
            strength=2,
            left_sample="B",
            flags={"unsafe": True, "broken": False},
            ms_spent=1234,
            rationale="alice-realname wrote this",
        )
        session.execute(update(Pair).where(Pair.id == pair_ids[5]).values(gold_choice="A"))
    record_votes(workspace, {5: [(BOB, "A", None)]})
    return workspace


def _rows(out: Path) -> list[dict]:
    return list(load_from_disk(str(out / "hf"))["train"])


def _stored(workspace) -> list[dict]:
    """What the database holds, one dict per judgment in id order, for comparison."""
    with workspace.sessions() as session:
        judgments = session.scalars(select(Judgment).order_by(Judgment.id)).all()
        return [
            {
                "pair_id": j.pair_id,
                "annotator": session.get(User, j.annotator_id).name,
                "choice": j.choice,
                "strength": j.strength,
                "flags": sorted(name for name, on in j.flags.items() if on),
                "left_sample": j.left_sample,
                "ms_spent": j.ms_spent,
                "time": j.created_at.isoformat(timespec="milliseconds"),
                "response_a": session.get(Pair, j.pair_id).sample_a.text,
                "response_b": session.get(Pair, j.pair_id).sample_b.text,
                "policy_a": session.get(Pair, j.pair_id).sample_a.policy.name,
                "policy_b": session.get(Pair, j.pair_id).sample_b.policy.name,
                "prompt": session.get(Pair, j.pair_id).prompt.text,
                "strategy": session.get(Pair, j.pair_id).strategy,
                "gold_choice": session.get(Pair, j.pair_id).gold_choice,
            }
            for j in judgments
        ]


def test_every_judgment_is_one_row_in_every_format(judged, tmp_path) -> None:
    out = tmp_path / "raw"
    result = export_raw(judged, RawExportOptions(out=out, formats=("hf", "jsonl", "parquet")))
    stored = _stored(judged)
    rows = _rows(out)
    assert len(rows) == len(stored) == 8 and result.counts["judgments"] == 8

    # Every column but the pseudonym is the database's, skips and the gold pair included.
    pseudonym_of: dict[str, str] = {}
    for row, truth in zip(rows, stored, strict=True):
        assert row["round"] == 1
        for key, value in truth.items():
            if key != "annotator":
                assert row[key] == value, key
        # One annotator, one pseudonym, throughout the export.
        assert pseudonym_of.setdefault(truth["annotator"], row["annotator"]) == row["annotator"]
    assert len(set(pseudonym_of.values())) == 2
    assert all(p.startswith("annotator-") for p in pseudonym_of.values())
    assert [row["choice"] for row in rows].count("skip") == 2
    assert {row["strategy"] for row in rows} >= {"new_vs_previous"}
    assert any(row["policy_a"] != row["policy_b"] for row in rows)
    flagged = next(row for row in rows if row["flags"])
    assert flagged["flags"] == ["unsafe"] and flagged["left_sample"] == "B"
    assert flagged["ms_spent"] == 1234 and flagged["strength"] == 2

    # The other formats hold the same rows; names and rationales are nowhere in the folder.
    assert pq.read_table(out / "data" / "train.parquet").to_pylist() == rows
    lines = (out / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    for path in out.rglob("*"):
        if path.is_file():
            assert ALICE.encode() not in path.read_bytes(), path
            assert BOB.encode() not in path.read_bytes(), path

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "raw_votes" and manifest["rounds"] == [1]
    assert manifest["counts"] == result.counts
    assert manifest["counts"] == {
        "judgments": 8,
        "choice_A": 2,
        "choice_B": 2,
        "choice_tie": 1,
        "choice_both_bad": 1,
        "choice_skip": 2,
        "choice_ranking": 0,
        "pairs_judged": 6,
        "prompts": 6,
        "annotators": 2,
        "gold_judgments": 1,
        "rows_train": 8,
    }
    assert sum(manifest["models"].values()) == 2 * len(rows)
    assert manifest["content_hash"] == result.content_hash
    card = (out / "README.md").read_text()
    assert "# Raw votes" in card and "stable within this export only" in card
    assert "| skips | 2 |" in card and "| judgments (one row each) | 8 |" in card
    with judged.sessions() as session:
        record = session.get(Export, result.export_id)
        assert record.content_hash == result.content_hash
        assert record.filters["kind"] == "raw_votes" and record.counts == result.counts


def test_pseudonyms_differ_across_exports_and_overwrite_follows_the_rules(judged, tmp_path) -> None:
    out = tmp_path / "raw"
    first = export_raw(judged, RawExportOptions(out=out))
    before = {(r["pair_id"], r["time"]): r["annotator"] for r in _rows(out)}
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export_raw(judged, RawExportOptions(out=out))
    # A raw export is recognized as an earlier export, and replaced with --overwrite.
    second = export_raw(judged, RawExportOptions(out=out, overwrite=True))
    after = {(r["pair_id"], r["time"]): r["annotator"] for r in _rows(out)}
    assert before.keys() == after.keys()
    assert not set(before.values()) & set(after.values())
    assert first.content_hash != second.content_hash

    # Either kind of export replaces the other; a folder with other files is refused.
    export_preferences(judged, ExportOptions(out=out, overwrite=True))
    export_raw(judged, RawExportOptions(out=out, overwrite=True))
    assert json.loads((out / "manifest.json").read_text())["kind"] == "raw_votes"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt, which the export did not write"):
        export_raw(judged, RawExportOptions(out=out, overwrite=True))
    assert (out / "notes.txt").read_text() == "mine"


def test_pseudonyms_are_a_function_of_salt_and_id() -> None:
    ids = [3, 1, 3, 2]
    same = pseudonyms(ids, b"salt")
    assert same == pseudonyms(ids, b"salt") and len(set(same.values())) == 3
    assert not set(same.values()) & set(pseudonyms(ids, b"other").values())


def test_conversational_rows_are_message_lists(sqlite_workspace, tiny_policy, tmp_path) -> None:
    store_prompts(sqlite_workspace, ["Say hi"], chat=True)
    generate_round(sqlite_workspace, round_request(tiny_policy, n_prompts=1), False)
    record_votes(sqlite_workspace, {0: [(ALICE, "A", 1)]})
    plain = tmp_path / "plain"
    export_raw(sqlite_workspace, RawExportOptions(out=plain))
    chat = tmp_path / "chat"
    export_raw(sqlite_workspace, RawExportOptions(out=chat, conversational=True))
    (text,), (messages,) = _rows(plain), _rows(chat)
    assert isinstance(text["prompt"], str)
    assert messages["prompt"] == [{"role": "user", "content": text["prompt"]}]
    assert messages["response_a"] == [{"role": "assistant", "content": text["response_a"]}]


def _cli(workspace, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--workspace", str(workspace.root), "export", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_raw_and_its_refusals(sqlite_workspace, tiny_policy, tmp_path, capsys) -> None:
    store_prompts(sqlite_workspace, [f"Prompt {i}" for i in range(3)])
    generate_round(sqlite_workspace, round_request(tiny_policy, n_prompts=3), False)
    capsys.readouterr()  # the generation's progress bars
    out = tmp_path / "votes"
    code, _, err = _cli(sqlite_workspace, capsys, "--out", str(out), "--raw")
    assert code == 2 and "There are no judgments in round 1 yet" in err and err.count("\n") == 1
    record_votes(sqlite_workspace, {0: [(ALICE, "A", 2), (BOB, "skip", None)]})

    for flag in (["--min-votes", "2"], ["--seed", "0"], ["--exclude-gold"], ["--ties", "drop"]):
        code, _, err = _cli(sqlite_workspace, capsys, "--out", str(out), "--raw", *flag)
        assert code == 2 and err.count("\n") == 1, flag
        assert f"{flag[0]} shapes the preference dataset" in err and not out.exists()
    code, _, err = _cli(sqlite_workspace, capsys, "--out", str(out), "--raw", "--rounds", "7")
    assert code == 2 and "There is no round 7" in err

    code, stdout, _ = _cli(
        sqlite_workspace, capsys, "--out", str(out), "--raw", "--rounds", "1", "--format", "jsonl"
    )
    assert code == 0 and "Exported 2 judgments (one row each)" in stdout
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 2
    assert not (out / "hf").exists()
    # Without --raw the preference flags work as before, defaults included.
    code, stdout, _ = _cli(sqlite_workspace, capsys, "--out", str(tmp_path / "pref"), "--seed", "0")
    assert code == 0 and "pairs exported" in stdout
