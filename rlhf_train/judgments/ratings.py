"""Ratings of policies from the annotators' cross-policy votes: a Bradley–Terry model.

P(i beats j) = sigmoid(beta_i - beta_j), fitted by maximum likelihood on every vote (a tie
is half a win to each side, each vote weighs its weight). With style control the logit
gains gamma * d, d = (len_a - len_b) / (len_a + len_b) in words (rounded to 0.01), so that
the betas compare policies at equal length and gamma says how much length alone sways the
annotators.

Shown on an Elo-like scale: rating = 1000 + 400 * (beta - beta_anchor) / ln 10, so 400
points are 10:1 odds, and the anchor (the starting policy) sits at 1000. Intervals are
percentile 95% intervals of a bootstrap over prompts: a resample draws prompts with
replacement and takes all their votes, because votes on one prompt are not independent.

Only policies connected to the anchor through comparisons get a number; the others are
`unplaced`. The fit pins beta_anchor = 0 and adds a ridge of 1e-9 on the betas: the
maximum-likelihood solution moves by about 1e-9, and a policy that won (or lost) every
vote in a resample gets a large finite rating instead of an endless Newton walk.

Fast because the likelihood only needs, per cell (pair of policies, and length covariate
with style control), the weighted wins and totals: votes are aggregated once per (prompt,
cell), a resample is a reweighting of those groups by how often its prompts were drawn,
and Newton's method runs on a batch of resamples at once, warm-started from the full fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlhf_train.errors import UserError
from rlhf_train.judgments.votes import PolicyVotes

SCALE = 400.0 / math.log(10.0)
ANCHOR_RATING = 1000.0
RIDGE = 1e-9
MAX_STEP = 2.0  # logits per Newton step: a far start cannot overshoot into overflow
TOLERANCE = 1e-10
MAX_ITERATIONS = 200
BATCH = 250  # resamples per batched Newton solve
CELLS_PER_BATCH = 2_000_000  # resamples x cells in one solve: bounds its memory
STYLE_GRID = 100  # the length covariate is rounded to 1 / STYLE_GRID


@dataclass(frozen=True)
class Rating:
    name: str
    rating: float  # Elo-like scale: 400 * log10 odds, anchor policy = 1000
    low: float  # 95% bootstrap interval
    high: float
    votes: int  # judgments this policy took part in
    beats_next: float | None  # P(this policy beats the next one below it), None for the last


@dataclass(frozen=True)
class Leaderboard:
    ratings: list[Rating]  # best first; only the policies connected to the anchor
    anchor: str  # the starting policy (rating 1000)
    style_control: bool
    length_coefficient: float | None  # with style control: logit per unit of d (see above)
    unplaced: list[str]  # policies whose votes do not connect them to the anchor
    never_compared: list[tuple[str, str]]
    resamples: int
    n_votes: int  # votes in the fit (those between placed policies)


@dataclass(frozen=True)
class _Cells:
    """The votes of the anchor's component, aggregated. Policies are local indices 0..k-1
    (the anchor is 0). Cells are sorted by pair of policies: pair q compares first[q] with
    second[q] and owns the cells starts[q] .. starts[q] + sizes[q] - 1, one per value of
    the length covariate (style[c]; a single cell of 0 without style control)."""

    first: np.ndarray  # per pair
    second: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    style: np.ndarray  # per cell
    group_cell: np.ndarray  # per (prompt, cell) group: its cell
    group_prompt: np.ndarray  # its prompt, 0..n_prompts-1
    group_wins: np.ndarray  # weighted wins of the pair's first policy
    group_total: np.ndarray  # weighted votes
    n_prompts: int


def _check(votes: PolicyVotes) -> None:
    n = len(votes.outcome)
    arrays = (votes.policy_a, votes.policy_b, votes.prompt, votes.length_a, votes.length_b)
    if any(len(array) != n for array in (*arrays, votes.weight)):
        raise ValueError("every array of PolicyVotes needs one entry per vote")
    if n and (
        min(votes.policy_a.min(), votes.policy_b.min()) < 0
        or max(votes.policy_a.max(), votes.policy_b.max()) >= len(votes.names)
    ):
        raise ValueError("policy indices must be positions in PolicyVotes.names")
    if n and (np.any(votes.weight < 0) or np.any((votes.outcome < 0) | (votes.outcome > 1))):
        raise ValueError("weights must be >= 0 and outcomes within [0, 1]")


def _component(votes: PolicyVotes, anchor: int) -> np.ndarray:
    """Whether each policy is connected to the anchor through votes of positive weight."""
    counted = votes.weight > 0
    a, b = votes.policy_a[counted], votes.policy_b[counted]
    reached = np.zeros(len(votes.names), dtype=bool)
    reached[anchor] = True
    while True:  # at most one pass per policy: each pass reaches at least one more or stops
        grown = reached.copy()
        grown[b[reached[a]]] = True
        grown[a[reached[b]]] = True
        if (grown == reached).all():
            return reached
        reached = grown


def _length_covariate(votes: PolicyVotes) -> np.ndarray:
    total = votes.length_a + votes.length_b
    difference = votes.length_a - votes.length_b
    return np.divide(difference, total, out=np.zeros_like(total), where=total > 0)


def _cells(votes: PolicyVotes, local: np.ndarray, keep: np.ndarray, style: bool) -> _Cells:
    a, b = local[votes.policy_a[keep]], local[votes.policy_b[keep]]
    outcome, weight = votes.outcome[keep], votes.weight[keep]
    # d on a grid of 0.01 (one word in a hundred): a pair's votes then fall into at most
    # 201 cells, whatever the lengths, which keeps the bootstrap fast.
    d = np.round(_length_covariate(votes)[keep] * STYLE_GRID) if style else np.zeros(len(a))
    # Each pair's first policy is the lower index; a swapped vote flips outcome and d.
    swap = a > b
    first, second = np.where(swap, b, a), np.where(swap, a, b)
    wins = np.where(swap, 1.0 - outcome, outcome) * weight
    d = np.where(swap, -d, d).astype(np.int64) + STYLE_GRID  # 0 .. 2 * STYLE_GRID
    # Integer keys throughout: np.unique on one int64 array is far faster than on rows.
    k, span = int(local.max()) + 1, 2 * STYLE_GRID + 1
    keys, cell = np.unique((first * k + second) * span + d, return_inverse=True)
    pairs, starts, sizes = np.unique(keys // span, return_index=True, return_counts=True)
    prompts, prompt = np.unique(votes.prompt[keep], return_inverse=True)
    n_cells = len(keys)
    group_keys, group = np.unique(prompt.astype(np.int64) * n_cells + cell, return_inverse=True)
    return _Cells(
        first=pairs // k,
        second=pairs % k,
        starts=starts,
        sizes=sizes,
        style=(keys % span - STYLE_GRID) / STYLE_GRID,
        group_cell=group_keys % n_cells,
        group_prompt=group_keys // n_cells,
        group_wins=np.bincount(group, weights=wins, minlength=len(group_keys)),
        group_total=np.bincount(group, weights=weight, minlength=len(group_keys)),
        n_prompts=len(prompts),
    )


def _scatter(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per row b of values (B, C): sums of values[b] by index (C,) into (B, size)."""
    rows = values.shape[0]
    flat = (np.arange(rows)[:, None] * size + index[None, :]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=rows * size).reshape(rows, size)


def _newton(
    cells: _Cells, wins: np.ndarray, total: np.ndarray, theta: np.ndarray, style: bool
) -> np.ndarray:
    """Maximize each row's log-likelihood (wins, total: (B, cells)) from theta (B, m);
    theta holds the k betas (beta[0], the anchor's, stays 0) and, with style, gamma last.
    Sums over a pair's cells come first (reduceat), so the Hessian is built per pair."""
    batch, m = theta.shape
    k = m - 1 if style else m
    f, s, d, starts = cells.first, cells.second, cells.style, cells.starts
    theta = theta.copy()
    for _ in range(MAX_ITERATIONS):
        eta = np.repeat(theta[:, f] - theta[:, s], cells.sizes, axis=1)
        if style:
            eta += theta[:, [k]] * d
        p = 0.5 * (1.0 + np.tanh(0.5 * eta))  # the logistic function, without overflow
        residual = wins - total * p
        w = total * p * (1.0 - p)
        per_pair, w_pair = (
            np.add.reduceat(residual, starts, axis=1),
            np.add.reduceat(w, starts, axis=1),
        )
        grad = _scatter(f, per_pair, m) - _scatter(s, per_pair, m) - RIDGE * theta
        # The Hessian's entries per pair: (row, column, value).
        entries = [(f, f, w_pair), (s, s, w_pair), (f, s, -w_pair), (s, f, -w_pair)]
        if style:
            grad[:, k] = (residual * d).sum(axis=1) - RIDGE * theta[:, k]
            wd = np.add.reduceat(w * d, starts, axis=1)
            g = np.full_like(f, k)
            entries += [(f, g, wd), (g, f, wd), (s, g, -wd), (g, s, -wd)]
        hessian = sum(_scatter(row * m + col, value, m * m) for row, col, value in entries)
        hessian = hessian.reshape(batch, m, m)
        if style:
            hessian[:, k, k] += (w * d * d).sum(axis=1)
        hessian += RIDGE * np.eye(m)
        # beta_anchor = 0: its row and column say "no step".
        hessian[:, 0, :] = 0.0
        hessian[:, :, 0] = 0.0
        hessian[:, 0, 0] = 1.0
        grad[:, 0] = 0.0
        step = np.linalg.solve(hessian, grad[:, :, None])[:, :, 0]
        largest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(largest, 1e-300))
        theta += step
        if largest.max() < TOLERANCE:
            break
    return theta


def _bootstrap(
    cells: _Cells, fitted: np.ndarray, style: bool, resamples: int, seed: int
) -> np.ndarray:
    """(resamples, m) parameters, each fitted on a resample of the prompts."""
    rng = np.random.default_rng(seed)
    n_cells, n_prompts = len(cells.style), cells.n_prompts
    # One resample at a time for the reweighting (memory stays O(groups)); Newton on
    # batches of resamples at once (its per-call cost is then shared).
    batch = max(1, min(resamples, BATCH, CELLS_PER_BATCH // n_cells))
    out = np.empty((resamples, fitted.shape[0]))
    wins, total = np.empty((batch, n_cells)), np.empty((batch, n_cells))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        for row in range(size):
            # How often each prompt was drawn: the weight of all its votes this time.
            times = np.bincount(rng.integers(0, n_prompts, n_prompts), minlength=n_prompts)
            per_group = times[cells.group_prompt]
            wins[row] = np.bincount(cells.group_cell, per_group * cells.group_wins, n_cells)
            total[row] = np.bincount(cells.group_cell, per_group * cells.group_total, n_cells)
        start_theta = np.repeat(fitted[None, :], size, axis=0)
        out[start : start + size] = _newton(cells, wins[:size], total[:size], start_theta, style)
    return out


def _anchor_index(votes: PolicyVotes, anchor: str | None) -> int:
    if not votes.names or not len(votes.outcome):
        raise UserError(
            "There are no cross-policy votes to rate policies from; judge pairs of two "
            "different policies first (a round with a previous policy, or an arena round)."
        )
    if anchor is None:
        return 0
    if anchor not in votes.names:
        raise UserError(
            f"Policy {anchor!r} has no cross-policy votes; anchor the ratings to one of "
            f"{', '.join(votes.names)}."
        )
    return votes.names.index(anchor)


def _never_compared(votes: PolicyVotes) -> list[tuple[str, str]]:
    n = len(votes.names)
    met = np.zeros((n, n), dtype=bool)
    met[votes.policy_a, votes.policy_b] = True
    met |= met.T
    return [
        (votes.names[i], votes.names[j]) for i in range(n) for j in range(i + 1, n) if not met[i, j]
    ]


def fit_leaderboard(
    votes: PolicyVotes,
    *,
    anchor: str | None = None,
    style_control: bool = False,
    resamples: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """Ratings with 95% bootstrap intervals of the policies connected to `anchor` (None:
    votes.names[0], the starting policy). No votes, or an anchor without votes: UserError.
    beats_next is the fitted P(policy beats the next one below it), at equal length with
    style control."""
    _check(votes)
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    anchor_index = _anchor_index(votes, anchor)
    placed = _component(votes, anchor_index)
    if placed.sum() < 2:
        raise UserError(
            f"Policy {votes.names[anchor_index]!r} has no cross-policy votes of positive "
            "weight, so nothing can be rated against it; anchor to another policy."
        )
    # Local indices: the anchor first, then the other placed policies in names' order.
    members = [anchor_index] + [i for i in np.flatnonzero(placed) if i != anchor_index]
    local = np.full(len(votes.names), -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    keep = placed[votes.policy_a] & placed[votes.policy_b]
    cells = _cells(votes, local, keep, style_control)
    m = len(members) + (1 if style_control else 0)
    n_cells = len(cells.style)
    wins = np.bincount(cells.group_cell, cells.group_wins, n_cells)[None, :]
    total = np.bincount(cells.group_cell, cells.group_total, n_cells)[None, :]
    fitted = _newton(cells, wins, total, np.zeros((1, m)), style_control)[0]
    boot = _bootstrap(cells, fitted, style_control, resamples, seed)
    k = len(members)
    ratings = ANCHOR_RATING + SCALE * fitted[:k]
    low, high = ANCHOR_RATING + SCALE * np.percentile(boot[:, :k], [2.5, 97.5], axis=0)
    counts = np.bincount(votes.policy_a[keep], minlength=len(votes.names)) + np.bincount(
        votes.policy_b[keep], minlength=len(votes.names)
    )
    order = sorted(range(k), key=lambda i: (-ratings[i], votes.names[members[i]]))
    rows = []
    for position, i in enumerate(order):
        below = order[position + 1] if position + 1 < k else None
        beats = None
        if below is not None:
            beats = float(1.0 / (1.0 + math.exp(fitted[below] - fitted[i])))
        rows.append(
            Rating(
                name=votes.names[members[i]],
                rating=float(ratings[i]),
                low=float(low[i]),
                high=float(high[i]),
                votes=int(counts[members[i]]),
                beats_next=beats,
            )
        )
    return Leaderboard(
        ratings=rows,
        anchor=votes.names[anchor_index],
        style_control=style_control,
        length_coefficient=float(fitted[k]) if style_control else None,
        unplaced=[name for name, inside in zip(votes.names, placed, strict=True) if not inside],
        never_compared=_never_compared(votes),
        resamples=resamples,
        n_votes=int(keep.sum()),
    )


def overlap(board: Leaderboard, a: str, b: str) -> float:
    """How much the 95% intervals of a and b overlap: the length of their intersection over
    that of their union, 0 when disjoint, 1 when equal. A policy without a rating (unplaced,
    or not on the board) overlaps everything fully: nothing is known about its order."""
    found = {rating.name: rating for rating in board.ratings}
    if a not in found or b not in found:
        return 1.0
    first, second = found[a], found[b]
    inside = min(first.high, second.high) - max(first.low, second.low)
    if inside < 0:
        return 0.0
    union = max(first.high, second.high) - min(first.low, second.low)
    return 1.0 if union == 0 else float(inside / union)


def leaderboard_rows(board: Leaderboard) -> list[dict]:
    """One JSON-ready row per rated policy, best first."""
    return [
        {
            "rank": rank,
            "policy": rating.name,
            "rating": rating.rating,
            "low": rating.low,
            "high": rating.high,
            "votes": rating.votes,
            "beats_next": rating.beats_next,
        }
        for rank, rating in enumerate(board.ratings, start=1)
    ]


def leaderboard_json(board: Leaderboard) -> dict:
    """The whole board as JSON-ready data: the rows and what could not be rated."""
    return {
        "anchor": board.anchor,
        "style_control": board.style_control,
        "length_coefficient": board.length_coefficient,
        "resamples": board.resamples,
        "n_votes": board.n_votes,
        "ratings": leaderboard_rows(board),
        "unplaced": list(board.unplaced),
        "never_compared": [list(pair) for pair in board.never_compared],
    }
