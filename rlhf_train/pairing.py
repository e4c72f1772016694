"""Forming comparison pairs from the samples of one prompt.

Pure functions on texts and indices, so the rules are easy to test: each sample is used
in at most one pair, exact duplicates are never paired with each other, and which
sample is called A is decided by a coin, not by the policy that wrote it.
"""

from __future__ import annotations

import random
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
