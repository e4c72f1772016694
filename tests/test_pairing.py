"""Pairs use each sample at most once and never pair identical texts."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rlhf_train.rounds.pairing import PlannedPair, pair_across, pair_most_uncertain, pair_within

texts = st.lists(st.sampled_from(["x", "y", "z", "same"]), min_size=0, max_size=8)


@given(texts, st.integers(0, 4), st.integers(0, 2**32 - 1))
def test_pair_within(samples: list[str], max_pairs: int, seed: int) -> None:
    pairs = pair_within(samples, random.Random(seed), max_pairs)
    used = [i for p in pairs for i in (p.a, p.b)]
    assert len(used) == len(set(used))
    assert all(samples[p.a] != samples[p.b] for p in pairs)
    assert len(pairs) <= max_pairs
    # As many pairs as the distinct texts allow: only a run of one text can be left over.
    leftover = [samples[i] for i in range(len(samples)) if i not in used]
    if len(pairs) < max_pairs:
        assert len(set(leftover)) <= 1


@given(texts, texts, st.integers(0, 4), st.integers(0, 2**32 - 1))
def test_pair_across(new: list[str], old: list[str], max_pairs: int, seed: int) -> None:
    pairs = pair_across(new, old, random.Random(seed), max_pairs)
    combined = new + old
    for pair in pairs:
        sides = sorted([pair.a, pair.b])
        assert sides[0] < len(new) <= sides[1]  # one new, one previous
        assert combined[pair.a] != combined[pair.b]
    used = [i for p in pairs for i in (p.a, p.b)]
    assert len(used) == len(set(used))
    assert len(pairs) <= max_pairs


def test_all_identical_gives_no_pair() -> None:
    assert pair_within(["same"] * 4, random.Random(0), 2) == []
    assert pair_across(["same"] * 2, ["same"] * 2, random.Random(0), 2) == []


def test_a_and_b_are_not_always_the_new_sample() -> None:
    sides = {pair_across(["n"], ["o"], random.Random(seed), 1)[0].a for seed in range(40)}
    assert sides == {0, 1}


def _unordered(pairs: list[PlannedPair]) -> set[frozenset[int]]:
    return {frozenset((p.a, p.b)) for p in pairs}


@given(
    st.lists(st.tuples(st.sampled_from(["x", "y", "z", "same"]), st.integers(-3, 3)), max_size=8),
    st.integers(0, 4),
    st.integers(0, 2**32 - 1),
)
def test_pair_most_uncertain_rules(
    samples: list[tuple[str, int]], max_pairs: int, seed: int
) -> None:
    texts = [text for text, _ in samples]
    scores = [float(score) for _, score in samples]
    pairs = pair_most_uncertain(texts, scores, random.Random(seed), max_pairs)
    used = [i for p in pairs for i in (p.a, p.b)]
    assert len(used) == len(set(used))
    assert all(texts[p.a] != texts[p.b] for p in pairs)
    assert len(pairs) <= max_pairs
    gaps = [abs(scores[p.a] - scores[p.b]) for p in pairs]
    assert gaps == sorted(gaps)  # greedy: each pair is at least as close as the next
    # Each pair is the closest one left among the samples not used by earlier pairs.
    for n in range(len(pairs)):
        taken = set(used[: 2 * n])
        free = [i for i in range(len(texts)) if i not in taken]
        closest = min(
            abs(scores[i] - scores[j]) for i in free for j in free if texts[i] != texts[j]
        )
        assert gaps[n] == closest
    if len(pairs) < max_pairs:  # stopped early: only one text is left unpaired
        assert len({texts[i] for i in range(len(texts)) if i not in used}) <= 1


def test_pair_most_uncertain_picks_the_closest_scores() -> None:
    texts = ["a", "b", "c", "d"]
    scores = [0.0, 10.0, 10.5, 30.0]
    assert _unordered(pair_most_uncertain(texts, scores, random.Random(0), 1)) == {
        frozenset((1, 2))
    }
    # Then the closest among the samples left: 0 and 30, not 0 and 10 (10 is taken).
    assert _unordered(pair_most_uncertain(texts, scores, random.Random(0), 2)) == {
        frozenset((1, 2)),
        frozenset((0, 3)),
    }


def test_pair_most_uncertain_never_pairs_identical_texts() -> None:
    # 0 and 1 have the same score but the same text too: the closest allowed pair is 1-2.
    pairs = pair_most_uncertain(["x", "x", "y"], [1.0, 1.0, 1.2], random.Random(0), 1)
    assert _unordered(pairs) in ({frozenset((0, 2))}, {frozenset((1, 2))})
    assert pair_most_uncertain(["same"] * 4, [0.0, 1.0, 2.0, 3.0], random.Random(0), 2) == []


def test_pair_most_uncertain_orientation_is_a_coin() -> None:
    sides = {
        pair_most_uncertain(["low", "high"], [0.0, 1.0], random.Random(seed), 1)[0].a
        for seed in range(40)
    }
    assert sides == {0, 1}


def test_pair_most_uncertain_ties_follow_the_seed() -> None:
    texts = ["a", "b", "c", "d"]
    scores = [1.0] * 4  # every pair is equally uncertain
    runs = [pair_most_uncertain(texts, scores, random.Random(seed), 2) for seed in range(20)]
    again = [pair_most_uncertain(texts, scores, random.Random(seed), 2) for seed in range(20)]
    assert runs == again
    assert len({frozenset(_unordered(pairs)) for pairs in runs}) > 1


def test_pair_most_uncertain_puts_nan_scores_last() -> None:
    pairs = pair_most_uncertain(["a", "b", "c"], [float("nan"), 2.0, 5.0], random.Random(0), 1)
    assert _unordered(pairs) == {frozenset((1, 2))}
