"""How much annotators agree: the one place this math lives (the exporter and the
app's quality page both use it).

Input is a table of votes, one row per judgment, with integer codes: `item` (the pair),
`rater` (the annotator) and `value` (the choice, see CATEGORIES). Skips are not votes and
must be left out by the caller. Everything is vectorized with numpy, because exports
hold millions of votes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = ("A", "B", "tie", "both_bad")
CODE = {name: code for code, name in enumerate(CATEGORIES)}


def encode_choices(choices: np.ndarray) -> np.ndarray:
    """Choice strings as codes 0..3; anything else (e.g. 'skip') as -1."""
    codes = np.full(len(choices), -1, dtype=np.int8)
    for name, code in CODE.items():
        codes[choices == name] = code
    return codes


def count_matrix(items: np.ndarray, values: np.ndarray, n_items: int) -> np.ndarray:
    """Votes per item and category: shape (n_items, len(CATEGORIES)); items are 0..n-1."""
    counts = np.zeros((n_items, len(CATEGORIES)), dtype=np.int64)
    np.add.at(counts, (items, values), 1)
    return counts


def pairwise_agreement(counts: np.ndarray) -> float | None:
    """The share of pairs of votes on the same item that agree, over all such pairs."""
    per_item = counts.sum(axis=1)
    vote_pairs = (per_item * (per_item - 1)).sum()
    if vote_pairs == 0:
        return None
    agreeing = (counts * (counts - 1)).sum()
    return float(agreeing / vote_pairs)


def krippendorff_alpha_nominal(counts: np.ndarray) -> float | None:
    """Krippendorff's alpha for nominal data from per-item category counts.

    alpha = 1 - D_o / D_e, with observed disagreement D_o from the coincidence matrix of
    items with at least two votes, and expected disagreement D_e from the pooled
    category frequencies. None when it is undefined (fewer than two pairable votes, or
    every vote in one category).
    """
    per_item = counts.sum(axis=1)
    pairable = per_item >= 2
    counts, per_item = counts[pairable], per_item[pairable]
    n = per_item.sum()
    if n < 2:
        return None
    agreeing = (counts * (counts - 1) / (per_item - 1)[:, None]).sum()
    observed = 1.0 - agreeing / n
    pooled = counts.sum(axis=0)
    expected = 1.0 - (pooled * (pooled - 1)).sum() / (n * (n - 1))
    if expected == 0:
        return None
    return float(1.0 - observed / expected)


def majority_of_others(counts: np.ndarray, items: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each vote, the strict majority category of the other votes on its item, or -1.

    Leaving the vote itself out keeps an annotator from agreeing with themselves.
    """
    others = counts[items].copy()
    others[np.arange(len(items)), values] -= 1
    top = others.max(axis=1)
    winner = others.argmax(axis=1)
    unique = (others == top[:, None]).sum(axis=1) == 1
    return np.where((top > 0) & unique, winner, -1)


@dataclass(frozen=True)
class RaterStats:
    rater: int
    votes: int
    agreement_with_majority: float | None  # over votes whose item has a majority of others
    gold_votes: int
    gold_accuracy: float | None


def rater_stats(
    items: np.ndarray,
    raters: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray,
    gold: np.ndarray,
) -> dict[int, RaterStats]:
    """Per annotator: votes, agreement with the majority of others, gold accuracy.

    `gold` holds, per item, the code of the known answer or -1 for ordinary items.
    """
    majority = majority_of_others(counts, items, values)
    judged = majority >= 0
    agrees = judged & (majority == values)
    item_gold = gold[items]
    on_gold = item_gold >= 0
    correct = on_gold & (item_gold == values)
    ids, index = np.unique(raters, return_inverse=True)

    def per_rater(flags: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=flags, minlength=len(ids)).astype(np.int64)

    votes = np.bincount(index, minlength=len(ids))
    n_judged, n_agree = per_rater(judged), per_rater(agrees)
    n_gold, n_correct = per_rater(on_gold), per_rater(correct)
    return {
        int(rater): RaterStats(
            rater=int(rater),
            votes=int(votes[i]),
            agreement_with_majority=float(n_agree[i] / n_judged[i]) if n_judged[i] else None,
            gold_votes=int(n_gold[i]),
            gold_accuracy=float(n_correct[i] / n_gold[i]) if n_gold[i] else None,
        )
        for i, rater in enumerate(ids)
    }


def rank_positions(ranking: list[list[int]]) -> dict[int, int]:
    """A ranking (groups of ids, best first) as id -> group index, 0 for the best."""
    return {item: place for place, group in enumerate(ranking) for item in group}


def kendall_tau_b(first: list[list[int]], second: list[list[int]]) -> float | None:
    """Kendall's tau-b of two rankings of the same items, ties allowed:
    (concordant - discordant) / sqrt(pairs untied in the first x pairs untied in the
    second); None when either ranking ties everything."""
    x, y = rank_positions(first), rank_positions(second)
    items = sorted(x)
    concordant = discordant = untied_x = untied_y = 0
    for index, i in enumerate(items):
        for j in items[index + 1 :]:
            dx, dy = x[i] - x[j], y[i] - y[j]
            untied_x += dx != 0
            untied_y += dy != 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    if not untied_x or not untied_y:
        return None
    return (concordant - discordant) / float(np.sqrt(untied_x * untied_y))


def mean_kendall_tau(rankings_by_task: dict[int, list[list[list[int]]]]) -> float | None:
    """The mean tau-b over every two annotators who ranked the same task (tasks with one
    ranking say nothing); None when no task has two."""
    taus = [
        tau
        for rankings in rankings_by_task.values()
        for a in range(len(rankings))
        for b in range(a + 1, len(rankings))
        if (tau := kendall_tau_b(rankings[a], rankings[b])) is not None
    ]
    return float(np.mean(taus)) if taus else None
