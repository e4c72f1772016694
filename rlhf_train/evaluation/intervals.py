"""95% intervals of a policy's figures, by resampling the held-out prompts.

A policy is measured on one response per held-out prompt, so each figure is an estimate
from a sample of prompts: 128 prompts leave about +-0.09 on a share near 0.5. Means and
shares of per-prompt values get the percentile bootstrap (the prompts redrawn with
replacement, seeded, so the same rows give the same interval). Figures of the whole set
of texts, such as distinct-2, get the jackknife instead (see texts_interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from rlhf_train.evaluation.measures import distinct_n
from rlhf_train.judges import judge_values

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_interval(
    count: int,
    statistic: Callable[[np.ndarray], float],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """The percentile interval of `statistic(indices)` over `resamples` draws of `count`
    row indices with replacement; None with fewer than two rows."""
    if count < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, count, count)) for _ in range(resamples)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: Sequence[float], **options) -> tuple[float, float] | None:
    """The bootstrap interval of the mean of per-prompt values."""
    array = np.asarray(values, dtype=np.float64)
    return bootstrap_interval(len(array), lambda rows: float(array[rows].mean()), **options)


def texts_interval(
    texts: Sequence[str], statistic: Callable[[list[str]], float], level: float = LEVEL
) -> tuple[float, float] | None:
    """The interval of a figure computed over all the texts at once, such as distinct-2,
    by the jackknife: the bootstrap would redraw some texts twice, and a repeated text
    repeats all its n-grams, so every redraw would sit below the figure itself. Leaving
    one text out at a time repeats nothing; the interval is the figure plus or minus the
    normal quantile times the jackknife's standard error. None with fewer than two texts."""
    count = len(texts)
    if count < 2:
        return None
    point = statistic(list(texts))
    left_out = np.array([statistic(list(texts[:i]) + list(texts[i + 1 :])) for i in range(count)])
    error = math.sqrt((count - 1) / count * float(((left_out - left_out.mean()) ** 2).sum()))
    half = NormalDist().inv_cdf(0.5 + level / 2) * error
    return point - half, point + half


def policy_intervals(
    figures: dict[str, Any],
    texts: Sequence[str],
    judged: dict[str, list[float]],
    ended: Sequence[bool],
) -> dict[str, list[float]]:
    """Per figure of one policy's evaluation, its 95% interval [low, high]: the reward,
    the KL, distinct-2, the share that ends, and each judge's figures. A figure that was
    not measured (no reward model, no reference) has none."""
    per_prompt: dict[str, Sequence[float] | None] = {
        "score_mean": figures.get("scores"),
        "kl": figures.get("kl_terms"),
        "ended_share": [float(flag) for flag in ended],
    }
    for name, scores in judged.items():
        per_prompt |= judge_values(name, scores)
    intervals = {
        key: mean_interval(values) for key, values in per_prompt.items() if values is not None
    }
    intervals["distinct_2"] = texts_interval(texts, lambda rows: distinct_n(rows, 2))
    return {key: list(bounds) for key, bounds in intervals.items() if bounds is not None}
