"""Rankings at export: each ranking of K gives its K(K-1)/2 pairs (properties, with
hypothesis), aggregated by the pairs' majority rule with ties per --ties, margins from
the rank distance; Kendall's tau-b worked by hand; the whole export on SQLite and
PostgreSQL, read back through the same reader import-preferences uses."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st

from db.engine import transaction
from db.judgments import next_pair, record_judgment
from db.ranking import set_gold_ranking
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.export.query import PairTable, VoteTable
from rlhf_train.export.rankings import Rankings, ballots
from rlhf_train.export.reader import read_export
from rlhf_train.export.summary import describe_export
from rlhf_train.judgments.agreement import CODE, kendall_tau_b, mean_kendall_tau
from rlhf_train.rounds.import_preferences import import_preferences, read_preference_rows
from tests.ranking_fixtures import ranking_round


@st.composite
def _ranking(draw, samples: list[int]) -> list[list[int]]:
    """Any order of `samples` with ties: a shuffle cut into groups."""
    order = draw(st.permutations(samples))
    cuts = draw(st.lists(st.booleans(), min_size=len(order) - 1, max_size=len(order) - 1))
    groups = [[order[0]]]
    for sample, cut in zip(order[1:], cuts, strict=True):
        if cut:
            groups.append([sample])
        else:
            groups[-1].append(sample)
    return groups


@st.composite
def _tasks(draw):
    tasks, judgments, next_sample = {}, [], 100
    for task in range(1, draw(st.integers(1, 4)) + 1):
        k = draw(st.integers(3, 6))
        tasks[task] = list(range(next_sample, next_sample + k))
        next_sample += k
        for annotator in range(draw(st.integers(0, 3))):
            judgments.append((task, annotator, draw(_ranking(tasks[task]))))
    return tasks, judgments


def _empty_votes() -> VoteTable:
    return VoteTable(
        pair_ids=np.array([], np.int64),
        annotator_ids=np.array([], np.int64),
        choices=np.array([], object),
        strengths=np.array([], np.int64),
    )


def _task_table(tasks: dict[int, list[int]]) -> PairTable:
    ids = sorted(tasks)
    return PairTable(
        ids=np.array(ids, np.int64),
        round_numbers=np.ones(len(ids), np.int64),
        prompt_ids=np.array(ids, np.int64),
        sample_a=np.array([tasks[t][0] for t in ids], np.int64),
        sample_b=np.array([tasks[t][1] for t in ids], np.int64),
        gold=np.full(len(ids), -1, np.int8),
    )


@settings(max_examples=60, deadline=None)
@given(_tasks())
def test_every_ranking_gives_all_its_pairs_with_ties_as_ties(generated) -> None:
    tasks, judgments = generated
    voted = ballots(_task_table(tasks), _empty_votes(), Rankings(tasks, {}, judgments))
    pairs = voted.pairs
    # Each task becomes exactly its K(K-1)/2 pairs, never a response against itself.
    assert len(pairs.ids) == sum(math.comb(len(s), 2) for s in tasks.values())
    assert (pairs.sample_a != pairs.sample_b).all()
    assert voted.counts["ranking_pairs"] == len(voted.items)
    assert len(voted.items) == sum(math.comb(len(tasks[t]), 2) for t, _, _ in judgments)
    # Every vote says what its ranking says about the two responses.
    expected = []
    for task, annotator, ranking in judgments:
        place = {s: g for g, group in enumerate(ranking) for s in group}
        for a, b in combinations(tasks[task], 2):
            gap = place[b] - place[a]
            choice = "tie" if gap == 0 else ("A" if gap > 0 else "B")
            expected.append((task, a, b, annotator, CODE[choice], min(abs(gap), 3)))
    got = [
        (
            int(pairs.ids[i]),
            int(pairs.sample_a[i]),
            int(pairs.sample_b[i]),
            int(rater),
            int(value),
            int(strength),
        )
        for i, rater, value, strength in zip(
            voted.items, voted.raters, voted.values, voted.strengths, strict=True
        )
    ]
    assert sorted(got) == sorted(expected)


def test_gold_tasks_make_gold_pairs_where_the_known_order_decides() -> None:
    tasks = {1: [10, 11, 12], 2: [20, 21, 22]}
    gold = {1: [[11]], 2: [[22], [20, 21]]}
    pairs = ballots(_task_table(tasks), _empty_votes(), Rankings(tasks, gold, [])).pairs
    known = {
        (int(a), int(b)): int(g)
        for a, b, g in zip(pairs.sample_a, pairs.sample_b, pairs.gold, strict=True)
    }
    # Only the best known: its two pairs are gold, the third is not.
    assert known[(10, 11)] == CODE["B"] and known[(11, 12)] == CODE["A"]
    assert known[(10, 12)] == -1
    assert known[(20, 21)] == CODE["tie"] and known[(20, 22)] == CODE["B"]


def test_kendall_tau_b_by_hand() -> None:
    first = [[1], [2], [3]]
    assert kendall_tau_b(first, first) == 1.0
    assert kendall_tau_b(first, [[3], [2], [1]]) == -1.0
    # 2 concordant, 1 discordant of 3 untied pairs each.
    assert kendall_tau_b(first, [[1], [3], [2]]) == pytest.approx(1 / 3)
    # The second ties 1 and 3: 1 concordant, 1 discordant, untied pairs 3 and 2.
    assert kendall_tau_b(first, [[2], [1, 3]]) == 0.0
    assert kendall_tau_b([[1], [3], [2]], [[2], [1, 3]]) == pytest.approx(-2 / math.sqrt(6))
    assert kendall_tau_b(first, [[1, 2, 3]]) is None
    rankings = {7: [first, [[1], [3], [2]], [[2], [1, 3]]], 8: [first]}
    assert mean_kendall_tau(rankings) == pytest.approx((1 / 3 + 0 - 2 / math.sqrt(6)) / 3)
    assert mean_kendall_tau({8: [first]}) is None


def _rank_all(workspace, users: list[int], orders: dict[int, list[list[list[int]]]]) -> None:
    """Each user takes their next task and ranks it by `orders[task index]`, written in
    positions 0..K-1 of the task's stored samples."""
    from db.ranking import task_sample_ids

    for user in users:
        while True:
            with transaction(workspace.sessions) as session:
                task = next_pair(session, user)
                if task is None:
                    break
                ids = task_sample_ids(session, task.pair_id)
            index = task.pair_id - 1
            plan = orders.get(index, [])
            position = users.index(user)
            with transaction(workspace.sessions) as session:
                if position >= len(plan):
                    record_judgment(session, user, task.pair_id, choice="skip", left_sample="A")
                    continue
                ranking = [[ids[p] for p in group] for group in plan[position]]
                record_judgment(
                    session,
                    user,
                    task.pair_id,
                    choice="ranking",
                    left_sample="A",
                    ranking=ranking,
                    display_order=[s for s, _ in task.responses],
                )


def test_export_expands_aggregates_and_reads_back(workspace, tmp_path: Path) -> None:
    users, _ = ranking_round(workspace.sessions, k=3, tasks=2, overlap=3, annotators=3)
    _rank_all(
        workspace,
        users,
        {
            0: [[[0], [1], [2]], [[0], [2], [1]], [[1], [0, 2]]],
            1: [[[0, 1], [2]]],
        },
    )
    with transaction(workspace.sessions) as session:
        set_gold_ranking(session, 2, [[0 + 4]])  # task 2's first response is sample 4
    result = export_preferences(workspace, ExportOptions(out=tmp_path / "drop", test_fraction=0))
    counts = result.counts
    assert counts["ranking_tasks"] == 2 and counts["rankings"] == 4
    assert counts["ranking_pairs"] == 4 * 3 and counts["votes_used"] == 12
    assert counts["skips"] == 2 and counts["pairs_tied"] == 1
    assert counts["pairs_exported"] == 5
    assert result.agreement["ranking_kendall_tau"] == pytest.approx(
        (1 / 3 + 0 - 2 / math.sqrt(6)) / 3
    )
    printed = describe_export(result)
    assert "rankings' mean Kendall tau-b -0.161" in printed
    assert "votes the rankings gave (K(K-1)/2 pairs each)" in printed
    rows = list(load_from_disk(str(tmp_path / "drop" / "hf"))["train"])
    by_texts = {(row["chosen"], row["rejected"]): row for row in rows}
    # Task 1: r0 over r1 by two of three (distances 1 and 2): margin 2/3 x 1.5.
    assert by_texts[("p0 r0", "p0 r1")]["margin"] == pytest.approx(1.0, abs=1e-5)
    assert by_texts[("p0 r0", "p0 r2")]["agreement"] == pytest.approx(2 / 3, abs=1e-5)
    assert by_texts[("p0 r1", "p0 r2")]["margin"] == pytest.approx(2 / 3, abs=1e-5)
    assert ("p1 r0", "p1 r2") in by_texts and ("p1 r1", "p1 r2") in by_texts
    assert all(row["chosen"] != row["rejected"] for row in rows)
    assert {row["pair_id"] for row in rows} == {1, 2}
    # --ties half: the tied pair gives one row each way, margin 0.
    half = export_preferences(
        workspace, ExportOptions(out=tmp_path / "half", ties="half", test_fraction=0)
    )
    assert half.counts["rows_train"] == 7
    assert read_export(workspace, tmp_path / "half").manifest["counts"]["rankings"] == 4
    # import-preferences reads the rows back as a round of pairs.
    rows = read_preference_rows(tmp_path / "drop" / "hf")
    with transaction(workspace.sessions) as session:
        report = import_preferences(session, rows, source="rankings")
    assert report.pairs == 5


def test_the_raw_export_keeps_each_ranking_whole(workspace, tmp_path: Path) -> None:
    from rlhf_train.export.raw import RawExportOptions, export_raw

    users, _ = ranking_round(workspace.sessions, k=3, tasks=1, overlap=1, annotators=1)
    _rank_all(workspace, users, {0: [[[2], [0, 1]]]})
    result = export_raw(workspace, RawExportOptions(out=tmp_path / "raw"))
    assert result.counts["choice_ranking"] == 1
    [row] = list(load_from_disk(str(tmp_path / "raw" / "hf"))["train"])
    assert row["choice"] == "ranking" and row["ranking"] == [[3], [1, 2]]
    assert sorted(row["display_order"]) == [1, 2, 3]
    assert row["responses_shown"] == [f"p0 r{sample - 1}" for sample in row["display_order"]]
