"""From the votes on each pair to one outcome: the majority, its share and its strength.

Rules (the README repeats them): skips are not votes; the category with strictly the
most votes among A, B, tie and both_bad wins; a shared top count is a tie (no majority);
agreement is the top count over all votes; the strength of the outcome is the mean
strength of the votes in the majority, a missing strength counting as 1 ("slightly").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlhf_train.judgments.agreement import CODE

NO_VOTES = -1
DEFAULT_STRENGTH = 1


@dataclass(frozen=True)
class Outcomes:
    """Per item (index 0..n-1): votes, outcome code (or NO_VOTES), agreement, strength."""

    n_votes: np.ndarray
    outcome: np.ndarray
    agreement: np.ndarray
    strength: np.ndarray


def aggregate(
    counts: np.ndarray, items: np.ndarray, values: np.ndarray, strengths: np.ndarray
) -> Outcomes:
    """`counts` from agreement.count_matrix; `strengths` per vote, 0 where missing."""
    n_votes = counts.sum(axis=1)
    top = counts.max(axis=1)
    unique = (counts == top[:, None]).sum(axis=1) == 1
    outcome = np.where(unique, counts.argmax(axis=1), CODE["tie"])
    outcome = np.where(n_votes == 0, NO_VOTES, outcome)
    agreement = np.divide(top, n_votes, out=np.zeros(len(n_votes)), where=n_votes > 0)
    in_majority = values == outcome[items]
    effective = np.where(strengths > 0, strengths, DEFAULT_STRENGTH)
    strength_sum = np.bincount(
        items, weights=np.where(in_majority, effective, 0), minlength=len(n_votes)
    )
    majority_size = np.bincount(items, weights=in_majority, minlength=len(n_votes))
    strength = np.divide(
        strength_sum, majority_size, out=np.zeros(len(n_votes)), where=majority_size > 0
    )
    return Outcomes(n_votes=n_votes, outcome=outcome, agreement=agreement, strength=strength)


def margin(agreement: float, strength: float) -> float:
    """The preference margin of a decided pair: agreement x mean majority strength.

    From 1/3 (a bare majority of 'slightly') up to 3 (everyone 'much better').
    """
    return round(float(agreement) * float(strength), 6)
