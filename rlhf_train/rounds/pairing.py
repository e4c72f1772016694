"""Forming comparison pairs from the samples of one prompt, and which two policies
answer each prompt of an arena round.

Pure functions on texts (and reward scores) and indices, so the rules are easy to test:
each sample is used in at most one pair, exact duplicates are never paired with each
other, and which sample is called A is decided by a coin, not by the policy that wrote it
nor by its score.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedPair:
    """Indices into the list of samples of one prompt, in order A, B."""

    a: int
    b: int


def _orient(rng: random.Random, first: int, second: int) -> PlannedPair:
    return PlannedPair(first, second) if rng.random() < 0.5 else PlannedPair(second, first)


def pair_within(texts: list[str], rng: random.Random, max_pairs: int) -> list[PlannedPair]:
    """Disjoint pairs of samples with different texts, from one policy."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    pairs: list[PlannedPair] = []
    unused = order
    while len(pairs) < max_pairs and len(unused) >= 2:
        first = unused[0]
        partner = next((j for j in unused[1:] if texts[j] != texts[first]), None)
        if partner is None:
            # Every remaining sample equals `first`; none of them can be paired.
            break
        pairs.append(_orient(rng, first, partner))
        unused = [i for i in unused if i not in (first, partner)]
    return pairs


def pair_across(
    new_texts: list[str], previous_texts: list[str], rng: random.Random, max_pairs: int
) -> list[PlannedPair]:
    """Pairs of one new and one previous sample with different texts.

    Indices of previous samples are offset by len(new_texts), as if both lists were
    concatenated new first.
    """
    offset = len(new_texts)
    free_previous = list(range(len(previous_texts)))
    rng.shuffle(free_previous)
    pairs: list[PlannedPair] = []
    for new_index in rng.sample(range(len(new_texts)), len(new_texts)):
        if len(pairs) == max_pairs:
            break
        partner = next(
            (j for j in free_previous if previous_texts[j] != new_texts[new_index]), None
        )
        if partner is None:
            continue
        free_previous.remove(partner)
        pairs.append(_orient(rng, new_index, offset + partner))
    return pairs


def _gap(scores: list[float], i: int, j: int) -> float:
    gap = abs(scores[i] - scores[j])
    # A NaN score would make the sort order meaningless; such pairs come last instead.
    return math.inf if math.isnan(gap) else gap


def pair_most_uncertain(
    texts: list[str], scores: list[float], rng: random.Random, max_pairs: int
) -> list[PlannedPair]:
    """Disjoint pairs of samples with different texts whose reward scores are closest.

    A Bradley-Terry reward model predicts P(a beats b) = sigmoid(r_a - r_b), so the
    smallest |r_a - r_b| is the comparison it is least sure about, where a human judgment
    teaches it the most. Greedy: the closest pair first, then the closest pair among the
    samples left. Equal gaps are ordered by the seeded `rng`, and A/B by its coin.
    """
    if len(texts) != len(scores):
        raise ValueError(f"{len(texts)} texts but {len(scores)} scores")
    candidates = [
        (i, j) for i, j in itertools.combinations(range(len(texts)), 2) if texts[i] != texts[j]
    ]
    # Shuffled before a stable sort: ties keep a seeded order, not the sampling order.
    rng.shuffle(candidates)
    candidates.sort(key=lambda pair: _gap(scores, *pair))
    pairs: list[PlannedPair] = []
    used: set[int] = set()
    for i, j in candidates:
        if len(pairs) >= max_pairs:
            break
        if i in used or j in used:
            continue
        used.update((i, j))
        pairs.append(_orient(rng, i, j))
    return pairs


# --- arena rounds: which two policies answer each prompt ------------------------------


def policy_pairs(n_policies: int) -> list[tuple[int, int]]:
    """The K(K-1)/2 pairs of policy indices of an arena round, in a fixed order."""
    return list(itertools.combinations(range(n_policies), 2))


def arena_schedule(weights: Sequence[float], seed: int) -> Iterator[int]:
    """The policy pair (an index into `weights`) of each prompt of an arena round, in order.

    Sequential apportionment (Sainte-Laguë): the next prompt goes to the pair with the
    highest weight / (prompts it has + 1/2), a pair with no prompt yet before any other, so
    every pair is compared as soon as there are as many prompts as pairs. Ties go by one
    seeded order of the pairs, so equal weights give a shuffled round-robin: after any
    number of prompts each pair has the floor or the ceiling of prompts / pairs. Each
    prefix of the schedule is the schedule of a smaller round, so a round that is resumed
    or extended keeps the pairs of the prompts it already has.
    """
    if not weights or any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise ValueError(f"arena weights must be positive and finite, got {list(weights)}")
    rank = list(range(len(weights)))
    random.Random(seed).shuffle(rank)
    counts = [0] * len(weights)
    while True:
        chosen = max(
            range(len(weights)),
            key=lambda p: (counts[p] == 0, weights[p] / (counts[p] + 0.5), -rank[p]),
        )
        counts[chosen] += 1
        yield chosen


def remaining_schedule(
    weights: Sequence[float], seed: int, done: Mapping[int, int], count: int
) -> list[int]:
    """The pairs of the next `count` prompts of a round that already holds `done` prompts
    per pair: the schedule with the entries those prompts fill taken out."""
    left = dict(done)
    upcoming: list[int] = []
    for pair in arena_schedule(weights, seed):
        if len(upcoming) == count:
            return upcoming
        if left.get(pair, 0) > 0:
            left[pair] -= 1
        else:
            upcoming.append(pair)
    raise AssertionError("unreachable: the schedule is endless")


def overlap_weights(overlaps: Sequence[float | None], floor_share: float = 0.05) -> list[float]:
    """Adaptive arena weights from how much each pair's 95% intervals overlap.

    `None` is a pair never compared: it gets the top weight, as the pair the ratings know
    least about. No pair gets less than `floor_share` of the top weight, so every pair
    keeps being checked even once its order looks settled.
    """
    known = [max(0.0, value) for value in overlaps if value is not None]
    top = max([value for value in known if value > 0], default=1.0)
    return [top if value is None else max(max(0.0, value), floor_share * top) for value in overlaps]
