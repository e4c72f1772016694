"""`rlhf export` on real databases: aggregation, filters, splits, formats, provenance,
reproducibility, refusals; and `rlhf import-preferences` round trips."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from datasets import load_from_disk
from sqlalchemy import select

from db.engine import transaction
from db.models import Export, Pair, Sample
from rlhf_train.errors import UserError
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.rounds.generate import generate_round
from rlhf_train.rounds.import_preferences import import_preferences, read_preference_rows
from tests.helpers import record_votes, round_request, store_prompts

N_PAIRS = 12


@pytest.fixture
def judged(workspace, tiny_policy):
    """12 pairs, judged so that each filter has something to remove."""
    store_prompts(workspace, [f"Prompt number {i}" for i in range(N_PAIRS)])
    report = generate_round(workspace, round_request(tiny_policy, n_prompts=N_PAIRS), False)
    assert report.pairs == N_PAIRS
    votes = {
        0: [("ann", "A", 3), ("bob", "A", 1), ("cat", "A", None)],  # unanimous A
        1: [("ann", "B", 2), ("bob", "B", 2), ("cat", "A", 1)],  # B, agreement 2/3
        2: [("ann", "A", 1), ("bob", "B", 1)],  # split: a tie
        3: [("ann", "tie", None), ("bob", "tie", None), ("cat", "A", 1)],  # majority tie
        4: [("ann", "both_bad", None), ("bob", "both_bad", None)],  # both bad
        5: [("ann", "skip", None), ("bob", "A", 2)],  # one vote (skip is not a vote)
        6: [("ann", "skip", None)],  # no votes
        7: [("ann", "B", 3), ("bob", "B", 3), ("cat", "B", 3)],
        8: [("ann", "A", 2), ("bob", "A", 2)],
        9: [("ann", "B", 1), ("bob", "B", 1)],
        10: [("ann", "A", 1), ("bob", "A", 1), ("cat", "B", 1)],
    }
    pair_ids = record_votes(workspace, votes)
    return workspace, pair_ids


def _export(workspace, tmp_path: Path, name: str = "out", **options) -> tuple:
    out = tmp_path / name
    result = export_preferences(workspace, ExportOptions(out=out, **options))
    return result, out


def _all_rows(out: Path) -> list[dict]:
    dataset = load_from_disk(str(out / "hf"))
    return [row for split in ("train", "test") for row in dataset[split]]


def _texts(workspace, pair_id: int) -> tuple[str, str]:
    with workspace.sessions() as session:
        pair = session.get(Pair, pair_id)
        return pair.sample_a.text, pair.sample_b.text


def test_majority_decides_and_counts_add_up(judged, tmp_path) -> None:
    workspace, pair_ids = judged
    result, out = _export(workspace, tmp_path, test_fraction=0.3)
    counts = result.counts
    assert counts["judgments"] == 26 and counts["skips"] == 2 and counts["votes_used"] == 24
    assert counts["pairs_without_votes"] == 2  # pair 6 (only a skip) and pair 11
    assert counts["pairs_both_bad"] == 1 and counts["pairs_tied"] == 2
    assert counts["pairs_exported"] == 7
    removed = sum(
        counts[k] for k in ("pairs_without_votes", "pairs_both_bad", "pairs_tied_dropped")
    )
    assert removed + counts["pairs_exported"] == counts["pairs"] == N_PAIRS
    rows = {row["pair_id"]: row for row in _all_rows(out)}
    assert counts["rows_train"] + counts["rows_test"] == len(rows) == 7
    expected_winner = {0: "A", 1: "B", 5: "A", 7: "B", 8: "A", 9: "B", 10: "A"}
    for position, side in expected_winner.items():
        row = rows[pair_ids[position]]
        a, b = _texts(workspace, pair_ids[position])
        assert (row["chosen"], row["rejected"]) == ((a, b) if side == "A" else (b, a))
        assert row["chosen"] != row["rejected"]
        assert row["prompt"] == f"Prompt number {position}" or row["prompt"].startswith("Prompt")
    # margin = agreement x mean strength of the majority (missing strength counts as 1)
    assert rows[pair_ids[0]]["margin"] == pytest.approx(1.0 * (3 + 1 + 1) / 3)
    assert rows[pair_ids[1]]["margin"] == pytest.approx(2 / 3 * 2, abs=1e-5)
    assert rows[pair_ids[1]]["agreement"] == pytest.approx(2 / 3, abs=1e-5)
    assert rows[pair_ids[7]]["n_votes"] == 3 and rows[pair_ids[5]]["n_votes"] == 1
    assert {row["round"] for row in rows.values()} == {1}
    assert {row["chosen_model"] for row in rows.values()} == {"tiny-policy0"}


def test_no_prompt_in_both_splits_and_split_is_stable(judged, tmp_path) -> None:
    workspace, _ = judged
    _, first = _export(workspace, tmp_path, name="a", test_fraction=0.5, seed=3)
    dataset = load_from_disk(str(first / "hf"))
    train, test = set(dataset["train"]["prompt"]), set(dataset["test"]["prompt"])
    assert train and test and not train & test
    # More judgments (a new decided pair) leave every earlier prompt where it was.
    record_votes(workspace, {11: [("ann", "A", 1)]})
    _, second = _export(workspace, tmp_path, name="b", test_fraction=0.5, seed=3)
    again = load_from_disk(str(second / "hf"))
    assert train <= set(again["train"]["prompt"]) and test <= set(again["test"]["prompt"])


def test_ties_half_keeps_two_rows_with_margin_zero(judged, tmp_path) -> None:
    workspace, pair_ids = judged
    result, out = _export(workspace, tmp_path, ties="half", test_fraction=0.0)
    rows = [r for r in _all_rows(out) if r["pair_id"] in (pair_ids[2], pair_ids[3])]
    assert len(rows) == 4 and {r["margin"] for r in rows} == {0.0}
    for pair_id in (pair_ids[2], pair_ids[3]):
        both = [(r["chosen"], r["rejected"]) for r in rows if r["pair_id"] == pair_id]
        assert both[0] == both[1][::-1]
    assert result.counts["rows_train"] == 7 + 4


def test_filters_on_votes_agreement_and_gold(judged, tmp_path) -> None:
    workspace, pair_ids = judged
    result, out = _export(workspace, tmp_path, name="votes", min_votes=3, min_agreement=0.9)
    assert {r["pair_id"] for r in _all_rows(out)} == {pair_ids[0], pair_ids[7]}
    assert result.counts["pairs_below_min_votes"] == 5
    assert result.counts["pairs_below_min_agreement"] == 3  # pairs 1, 3 and 10
    # Gold: pair 0's known answer is B, so everyone who judged it is wrong on gold.
    with transaction(workspace.sessions) as session:
        session.get(Pair, pair_ids[0]).gold_choice = "B"
        session.get(Pair, pair_ids[8]).gold_choice = "A"
    result, out = _export(workspace, tmp_path, name="gold", exclude_gold=True)
    assert result.counts["gold_pairs_excluded"] == 2
    assert not {pair_ids[0], pair_ids[8]} & {r["pair_id"] for r in _all_rows(out)}
    # Gold accuracy: ann and bob 1/2 (wrong on pair 0, right on pair 8), cat 0/1.
    result, _ = _export(workspace, tmp_path, name="acc", min_gold_accuracy=0.4)
    excluded = {a["name"] for a in result.agreement["annotators"] if a["excluded"]}
    assert excluded == {"cat"} and result.counts["annotators_excluded"] == 1
    assert result.counts["votes_from_excluded_annotators"] == 5
    with pytest.raises(UserError, match="annotators_excluded: 3"):
        _export(workspace, tmp_path, name="none-left", min_gold_accuracy=0.6)


def test_formats_card_manifest_and_record(judged, tmp_path) -> None:
    workspace, _ = judged
    result, out = _export(workspace, tmp_path, formats=("hf", "jsonl", "parquet"))
    jsonl = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert jsonl == list(load_from_disk(str(out / "hf"))["train"])
    import pyarrow.parquet as pq

    assert pq.read_table(out / "data" / "train.parquet").to_pylist() == jsonl
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content_hash"] == result.content_hash
    assert manifest["counts"] == result.counts and manifest["rounds"] == [1]
    assert "krippendorff_alpha" in manifest["agreement"]
    card = (out / "README.md").read_text()
    assert "pairs whose majority was both bad | 1" in card and result.content_hash in card
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    with workspace.sessions() as session:
        record = session.scalar(select(Export))
    assert record.content_hash == result.content_hash and record.output_path == str(out)
    assert record.counts["pairs_exported"] == 7 and record.filters["rounds"] == [1]


def test_same_database_and_options_give_identical_files(judged, tmp_path) -> None:
    workspace, _ = judged

    def files(folder: Path) -> dict[str, bytes]:
        return {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }

    options = dict(formats=("hf", "jsonl", "parquet"), ties="half", conversational=True)
    first, a = _export(workspace, tmp_path, name="a", **options)
    second, b = _export(workspace, tmp_path, name="b", **options)
    assert files(a) == files(b) and first.content_hash == second.content_hash


def test_conversational_rows_are_message_lists(judged, tmp_path) -> None:
    workspace, _ = judged
    _, out = _export(workspace, tmp_path, conversational=True, test_fraction=0.0)
    row = load_from_disk(str(out / "hf"))["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_refusals_leave_nothing_behind(judged, tmp_path) -> None:
    workspace, _ = judged
    with pytest.raises(UserError) as caught:
        _export(workspace, tmp_path, name="empty", min_votes=10)
    message = str(caught.value)
    assert message.startswith("Nothing is left to export after the filters (pairs: 12,")
    assert "pairs_below_min_votes: 10" in message
    assert list(tmp_path.iterdir()) == [workspace.root] or not (tmp_path / "empty").exists()
    assert not list(tmp_path.glob(".empty*"))
    _export(workspace, tmp_path, name="taken")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        _export(workspace, tmp_path, name="taken")
    _export(workspace, tmp_path, name="taken", overwrite=True, ties="half")
    assert not list(tmp_path.glob(".taken*"))
    with pytest.raises(UserError, match="There is no round 7"):
        _export(workspace, tmp_path, name="r7", rounds=[7])
    with workspace.sessions() as session:
        assert len(session.scalars(select(Export)).all()) == 2


def test_import_then_export_gives_the_same_pairs(judged, tmp_path) -> None:
    workspace, _ = judged
    _, first = _export(workspace, tmp_path, name="first", formats=("hf", "jsonl"))
    original = {(r["prompt"], r["chosen"], r["rejected"]) for r in _all_rows(first)}
    rows = read_preference_rows(first / "hf")
    with transaction(workspace.sessions) as session:
        report = import_preferences(session, rows, source="first")
    assert report.pairs == len(original) and report.round_number == 2
    _, second = _export(workspace, tmp_path, name="second", rounds=[2])
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in _all_rows(second)} == original
    assert {r["chosen_model"] for r in _all_rows(second)} == {"imported"}
    # The JSONL form of the same data imports to the same pairs too.
    assert {
        (r.prompt, r.chosen, r.rejected)
        for r in read_preference_rows(first / "data" / "train.jsonl")
    } <= original
    with workspace.sessions() as session:
        imported_samples = session.scalars(select(Sample).where(Sample.round_id == 2)).all()
    assert len(imported_samples) == 2 * len(original)


def test_malformed_import_files_name_the_place(tmp_path) -> None:
    missing = tmp_path / "missing.jsonl"
    missing.write_text(
        '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n'
    )
    with pytest.raises(UserError, match=r"missing.jsonl line 2 has no 'rejected' column"):
        read_preference_rows(missing)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UserError, match="line 1 is not valid JSON"):
        read_preference_rows(broken)
    empty_text = tmp_path / "empty.jsonl"
    empty_text.write_text('{"prompt": "p", "chosen": "", "rejected": "b"}\n')
    with pytest.raises(UserError, match="line 1 has no text in column 'chosen'"):
        read_preference_rows(empty_text)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(UserError, match=r"x.parquet row 1 has no 'rejected' column"):
        read_preference_rows(tmp_path / "x.parquet")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="is not a folder written by save_to_disk"):
        read_preference_rows(tmp_path / "folder")
    with pytest.raises(UserError, match="There is no"):
        read_preference_rows(tmp_path / "nope.jsonl")
