"""Pairs use each sample at most once and never pair identical texts."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from rlhf_train.pairing import pair_across, pair_within

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
