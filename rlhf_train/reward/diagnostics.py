"""Diagnostics for a trained reward model on held-out human preference pairs.

A single accuracy number hides the failures that matter before PPO: a reward model can be
right on easy, unanimous pairs and guess on contested ones, it can be overconfident (its
Bradley-Terry probabilities say 0.99 where people agree 70% of the time), and it can have
learned "longer is better" instead of what annotators liked. This module computes those
checks from plain arrays, with numpy only, and returns a JSON-ready dict so the same result
can go into a report, a file and the plots in `reward_plots`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Agreement is a share of votes; exact 1.0 can come out as 0.9999... after averaging.
UNANIMOUS_AT = 0.999
CLEAR_MAJORITY_AT = 2 / 3
# Strength votes are 1 (slightly), 2 (clearly), 3 (much); bucket the mean at the midpoints.
CLEARLY_AT = 1.5
MUCH_AT = 2.5
# |r| at which reward tracking length is worth a warning on its own.
LENGTH_CORRELATION_ALARM = 0.5
# A model that beats "pick the longer one" by less than this has not shown it learned more.
LENGTH_BASELINE_MARGIN = 0.05
# A longer-wins baseline this good means length alone already explains most preferences.
LENGTH_BASELINE_ALARM = 0.6
CALIBRATION_BINS = 10


def reward_diagnostics(
    chosen_rewards: np.ndarray,
    rejected_rewards: np.ndarray,
    chosen_lengths: np.ndarray,
    rejected_lengths: np.ndarray,
    agreement: np.ndarray,
    margin: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy overall and by annotator agreement and strength, a length-bias check,
    Bradley-Terry calibration and the reward distributions, for one reward model.

    One entry per test pair in every array: the rewards the model gave the chosen and
    the rejected response, their lengths in tokens, the share of votes that went to the
    majority (`agreement`, in (0, 1]) and `margin` (agreement x mean strength of the
    majority votes, strength 1 = slightly, 2 = clearly, 3 = much). `seed` fixes the coin
    that orients pairs for calibration. Undefined values are None, so the result can be
    written with `json.dumps(..., allow_nan=False)`.
    """
    arrays = _validated(
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
        agreement=agreement,
        margin=margin,
    )
    chosen = arrays["chosen_rewards"]
    rejected = arrays["rejected_rewards"]
    agree = arrays["agreement"]

    correct = _win_scores(chosen, rejected)
    accuracy = float(correct.mean())

    by_agreement = _buckets(
        correct,
        [
            ("unanimous", agree >= UNANIMOUS_AT),
            ("clear majority", (agree >= CLEAR_MAJORITY_AT) & (agree < UNANIMOUS_AT)),
            ("narrow majority", agree < CLEAR_MAJORITY_AT),
        ],
    )

    # Pairs without a majority have no defined strength; NaN fails every comparison below,
    # so they land in no bucket.
    has_majority = agree > 0
    strength = np.full(len(agree), np.nan)
    strength[has_majority] = arrays["margin"][has_majority] / agree[has_majority]
    by_strength = _buckets(
        correct,
        [
            ("slightly", strength < CLEARLY_AT),
            ("clearly", (strength >= CLEARLY_AT) & (strength < MUCH_AT)),
            ("much", strength >= MUCH_AT),
        ],
    )

    return {
        "n_pairs": len(chosen),
        "accuracy": accuracy,
        "mean_reward_gap": float((chosen - rejected).mean()),
        "by_agreement": by_agreement,
        "by_strength": by_strength,
        "length": _length_check(
            chosen, rejected, arrays["chosen_lengths"], arrays["rejected_lengths"], accuracy
        ),
        "calibration": _calibration(chosen, rejected, seed),
        "distribution": _distribution(chosen, rejected),
    }


def _validated(**named: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {}
    for name, values in named.items():
        array = np.asarray(values, dtype=float)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        arrays[name] = array
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise ValueError(f"all arrays must have one entry per pair, got lengths {listed}")
    if next(iter(sizes.values())) == 0:
        raise ValueError("no pairs to evaluate: the arrays are empty")
    return arrays


def _win_scores(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """1 where first > second, 0.5 on an exact tie, 0 otherwise."""
    return (first > second) + 0.5 * (first == second)


def _buckets(correct: np.ndarray, masks: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    rows = []
    for label, mask in masks:
        n = int(mask.sum())
        rows.append(
            {"bucket": label, "n": n, "accuracy": float(correct[mask].mean()) if n else None}
        )
    return rows


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2:
        return None
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denominator == 0 or not math.isfinite(denominator):
        return None
    # Rounding can push |r| a hair past 1.
    return max(-1.0, min(1.0, float((dx * dy).sum()) / denominator))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span (as scipy does)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run_rank = (starts + 1 + ends) / 2  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    return _pearson(_average_ranks(x), _average_ranks(y))


def _length_check(
    chosen: np.ndarray,
    rejected: np.ndarray,
    chosen_lengths: np.ndarray,
    rejected_lengths: np.ndarray,
    accuracy: float,
) -> dict[str, Any]:
    longer_wins = float(_win_scores(chosen_lengths, rejected_lengths).mean())
    rewards = np.concatenate([chosen, rejected])
    lengths = np.concatenate([chosen_lengths, rejected_lengths])
    pearson = _pearson(rewards, lengths)
    spearman = _spearman(rewards, lengths)

    follows_length = pearson is not None and abs(pearson) >= LENGTH_CORRELATION_ALARM
    no_better_than_length = (
        accuracy < longer_wins + LENGTH_BASELINE_MARGIN and longer_wins >= LENGTH_BASELINE_ALARM
    )
    r_text = "r undefined" if pearson is None else f"r = {pearson:.2f}"
    if follows_length and no_better_than_length:
        message = (
            f"Reward follows response length ({r_text}) and the model ({accuracy:.2f}) is not "
            f"clearly better than picking the longer response ({longer_wins:.2f}); check for a "
            "length bias before using it for PPO."
        )
    elif follows_length:
        message = (
            f"Reward follows response length ({r_text}); check for a length bias before "
            "using it for PPO."
        )
    elif no_better_than_length:
        message = (
            f"The model ({accuracy:.2f}) is not clearly better than picking the longer response "
            f"({longer_wins:.2f}, {r_text}); check for a length bias before using it for PPO."
        )
    else:
        message = (
            f"No sign of a length bias ({r_text}; longer-wins baseline {longer_wins:.2f} "
            f"vs model {accuracy:.2f})."
        )
    return {
        "longer_wins_accuracy": longer_wins,
        "reward_length_correlation": pearson,
        "reward_length_spearman": spearman,
        "alarm": bool(follows_length or no_better_than_length),
        "message": message,
    }


def _calibration(chosen: np.ndarray, rejected: np.ndarray, seed: int) -> dict[str, Any]:
    # Always putting the chosen response first would make every observed outcome 1, and
    # the reliability diagram would only show the upper half; a fair coin per pair gives
    # both outcomes while leaving the model's probabilities unchanged in meaning.
    chosen_first = np.random.default_rng(seed).random(len(chosen)) < 0.5
    first = np.where(chosen_first, chosen, rejected)
    second = np.where(chosen_first, rejected, chosen)
    logit = first - second
    # sigmoid via exp of a non-positive number only, so large gaps cannot overflow.
    e = np.exp(-np.abs(logit))
    predicted = np.where(logit >= 0, 1 / (1 + e), e / (1 + e))
    observed = chosen_first.astype(float)
    # -log sigmoid(x) = log(1 + exp(-x)); logaddexp keeps it finite for any gap.
    log_loss = float(np.where(chosen_first, np.logaddexp(0, -logit), np.logaddexp(0, logit)).mean())

    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # p == 1.0 belongs in the last bin, not an eleventh one.
    index = np.minimum((predicted * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    bins = []
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        in_bin = index == b
        n = int(in_bin.sum())
        mean_predicted = float(predicted[in_bin].mean()) if n else None
        observed_rate = float(observed[in_bin].mean()) if n else None
        if n:
            ece += n * abs(mean_predicted - observed_rate)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": n,
                "mean_predicted": mean_predicted,
                "observed_rate": observed_rate,
            }
        )
    return {"bins": bins, "ece": ece / len(chosen), "log_loss": log_loss}


def _stats(values: np.ndarray) -> dict[str, float]:
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p25": float(p25),
        "median": float(median),
        "p75": float(p75),
        "max": float(values.max()),
    }


def _distribution(chosen: np.ndarray, rejected: np.ndarray) -> dict[str, Any]:
    pooled = np.concatenate([chosen, rejected])
    low, high = float(pooled.min()), float(pooled.max())
    if low == high:
        # A constant reward still gets a drawable histogram around its value.
        low, high = low - 0.5, high + 0.5
    # Twenty bins on a handful of pairs would be mostly empty.
    n_bins = 20 if len(chosen) >= 50 else 10
    edges = np.linspace(low, high, n_bins + 1)
    return {
        "chosen": _stats(chosen),
        "rejected": _stats(rejected),
        "histogram": {
            "edges": [float(edge) for edge in edges],
            "chosen": [int(count) for count in np.histogram(chosen, edges)[0]],
            "rejected": [int(count) for count in np.histogram(rejected, edges)[0]],
        },
    }
