"""Agreement statistics and vote aggregation, by hand and against brute force."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_train.export.aggregate import NO_VOTES, aggregate, margin
from rlhf_train.judgments.agreement import (
    CATEGORIES,
    CODE,
    count_matrix,
    krippendorff_alpha_nominal,
    majority_of_others,
    pairwise_agreement,
    rater_stats,
)
from rlhf_train.prompts.split import is_test_prompt


def _votes(items: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item a list of choices -> (items, values, counts)."""
    item_ids = np.array([i for i, votes in enumerate(items) for _ in votes], dtype=np.int64)
    values = np.array([CODE[v] for votes in items for v in votes], dtype=np.int64)
    return item_ids, values, count_matrix(item_ids, values, len(items))


def test_hand_computed_values() -> None:
    _, _, perfect = _votes([["A", "A"], ["B", "B"]])
    assert krippendorff_alpha_nominal(perfect) == pytest.approx(1.0)
    assert pairwise_agreement(perfect) == pytest.approx(1.0)
    # Every pair disagrees: D_o = 1, D_e = 1 - (2*1 + 2*1) / (4*3) = 2/3, alpha = -0.5.
    _, _, split = _votes([["A", "B"], ["A", "B"]])
    assert krippendorff_alpha_nominal(split) == pytest.approx(-0.5)
    _, _, three = _votes([["A", "A", "B"]])
    assert pairwise_agreement(three) == pytest.approx(1 / 3)
    _, _, single = _votes([["A"], ["B"]])
    assert krippendorff_alpha_nominal(single) is None and pairwise_agreement(single) is None
    _, _, same = _votes([["A", "A"], ["A", "A"]])
    assert krippendorff_alpha_nominal(same) is None  # no expected disagreement


def _alpha_by_definition(items: list[list[str]]) -> float | None:
    """Krippendorff's alpha straight from the coincidence matrix, with loops."""
    coincidences: Counter = Counter()
    for votes in items:
        if len(votes) < 2:
            continue
        for i, j in ((i, j) for i in range(len(votes)) for j in range(len(votes)) if i != j):
            coincidences[(votes[i], votes[j])] += 1 / (len(votes) - 1)
    n = sum(coincidences.values())
    if n < 2:
        return None
    totals = Counter()
    for (c, _k), value in coincidences.items():
        totals[c] += value
    observed = sum(v for (c, k), v in coincidences.items() if c != k) / n
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n * (n - 1))
    return None if expected == 0 else 1 - observed / expected


def _pairwise_by_definition(items: list[list[str]]) -> float | None:
    agree = total = 0
    for votes in items:
        for a, b in combinations(votes, 2):
            total += 1
            agree += a == b
    return None if total == 0 else agree / total


vote_lists = st.lists(st.lists(st.sampled_from(CATEGORIES), max_size=5), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(vote_lists)
def test_agreement_matches_the_definitions(items: list[list[str]]) -> None:
    _, _, counts = _votes(items)
    for fast, slow in (
        (krippendorff_alpha_nominal(counts), _alpha_by_definition(items)),
        (pairwise_agreement(counts), _pairwise_by_definition(items)),
    ):
        if slow is None:
            assert fast is None
        else:
            assert fast == pytest.approx(slow)


@settings(max_examples=200, deadline=None)
@given(vote_lists, st.data())
def test_aggregation_follows_the_majority_rule(items: list[list[str]], data) -> None:
    item_ids, values, counts = _votes(items)
    strengths = np.array(
        data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values))),
        dtype=np.int64,
    )
    outcomes = aggregate(counts, item_ids, values, strengths)
    assert outcomes.n_votes.sum() == len(values)  # counts add up
    for index, votes in enumerate(items):
        tally = Counter(votes)
        if not votes:
            assert outcomes.outcome[index] == NO_VOTES
            continue
        top = max(tally.values())
        leaders = [c for c, n in tally.items() if n == top]
        expected = leaders[0] if len(leaders) == 1 else "tie"
        assert CATEGORIES[outcomes.outcome[index]] == expected
        assert outcomes.agreement[index] == pytest.approx(top / len(votes))
        if len(leaders) == 1:
            mine = [
                max(int(strengths[k]), 1) or 1
                for k in np.flatnonzero(item_ids == index)
                if CATEGORIES[values[k]] == expected
            ]
            assert outcomes.strength[index] == pytest.approx(sum(mine) / len(mine))
            assert 0 < margin(outcomes.agreement[index], outcomes.strength[index]) <= 3


def test_majority_of_others_leaves_the_voter_out() -> None:
    item_ids, values, counts = _votes([["A", "A", "B"], ["A", "B"]])
    others = majority_of_others(counts, item_ids, values)
    # item 0: A's others are (A, B): no majority; the B voter's others are (A, A): A.
    assert [CATEGORIES[v] if v >= 0 else None for v in others] == [None, None, "A", "B", "A"]


def test_rater_stats_gold_and_majority() -> None:
    items = np.array([0, 0, 0, 1, 1, 1])
    raters = np.array([7, 8, 9, 7, 8, 9])
    values = np.array([CODE[c] for c in ["A", "A", "B", "B", "B", "A"]])
    counts = count_matrix(items, values, 2)
    gold = np.array([CODE["A"], -1])
    stats = rater_stats(items, raters, values, counts, gold)
    assert stats[7].gold_accuracy == 1.0 and stats[9].gold_accuracy == 0.0
    # Rater 9 is outvoted by the two others on both items; for 7 and 8 the two others
    # split on both items, so there is no majority to agree with.
    assert stats[9].agreement_with_majority == 0.0
    assert stats[7].agreement_with_majority is None is stats[8].agreement_with_majority
    assert stats[8].votes == 2 and stats[8].gold_votes == 1


@given(st.lists(st.text(min_size=1), min_size=1, max_size=30), st.integers(0, 5))
def test_split_is_a_function_of_prompt_and_seed(prompts: list[str], seed: int) -> None:
    first = [is_test_prompt(p, 0.3, seed) for p in prompts]
    assert first == [is_test_prompt(p, 0.3, seed) for p in prompts]
    assert not any(is_test_prompt(p, 0.0, seed) for p in prompts)
    # Adding prompts never moves an existing one.
    assert first == [is_test_prompt(p, 0.3, seed) for p in prompts + ["new one"]][: len(prompts)]


def test_split_fraction_is_about_right() -> None:
    share = np.mean([is_test_prompt(f"prompt {i}", 0.2, 1) for i in range(5000)])
    assert 0.17 < share < 0.23
