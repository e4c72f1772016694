"""PNG plots of a policy evaluation, from the metrics `evaluate_policy_report` records.

Two figures: where the reward model puts each policy's responses (the score histograms on
shared bins, so the two are comparable at a glance), and one small bar panel per main
figure, policy beside the policy it is compared with. The figures have different units
(nats, tokens, shares), so each gets its own axis rather than one misleading shared one.
Drawn on their own Agg canvas, never through pyplot, as in reward_plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
POLICY_COLOR = "tab:blue"
AGAINST_COLOR = "tab:orange"

# (key in a policy's figures, panel title); panels whose values are all missing are left out.
MAIN_FIGURES = (
    ("score_mean", "Mean reward (± s.e.m.)"),
    ("kl", "KL to the reference (nats)"),
    ("reference_perplexity", "Reference perplexity"),
    ("response_length", "Response length (tokens)"),
    ("distinct_1", "Distinct-1"),
    ("distinct_2", "Distinct-2"),
    ("repetition_rate", "Repetition rate"),
    ("sentiment_mean", "Sentiment (VADER)"),
    ("words_mean", "Words per response"),
)


def write_policy_plots(metrics: dict[str, Any], folder: Path) -> list[Path]:
    """Write reward_distribution.png (only with reward scores) and main_figures.png into
    `folder` and return their paths."""
    paths = []
    if metrics["score_histogram"] is not None:
        paths.append(_save(folder / "reward_distribution.png", (5.0, 3.5), _distribution, metrics))
    paths.append(_save(folder / "main_figures.png", (10.0, 6.0), _main_figures, metrics))
    return paths


def _save(path: Path, size: tuple[float, float], draw, metrics: dict[str, Any]) -> Path:
    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    draw(figure, metrics)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _labels(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(side, label, color) for the policy P and, when there is one, the other policy Q;
    "P:" and "Q:" tell them apart even when a policy is compared with itself."""
    sides = [("policy", f"P: {metrics['policy']}", POLICY_COLOR)]
    if metrics["against"] is not None:
        sides.append(("against", f"Q: {metrics['against']}", AGAINST_COLOR))
    return sides


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _distribution(figure: Figure, metrics: dict[str, Any]) -> None:
    histogram = metrics["score_histogram"]
    ax = figure.add_subplot()
    for side, label, color in _labels(metrics):
        ax.stairs(histogram[side], histogram["edges"], fill=True, alpha=0.35, color=color)
        ax.stairs(histogram[side], histogram["edges"], color=color, label=label)
    ax.set_xlabel("Reward")
    ax.set_ylabel("Number of responses")
    ax.set_title(f"Rewards on {metrics['n_prompts']} held-out prompts")
    ax.legend(fontsize=7)


def _main_figures(figure: Figure, metrics: dict[str, Any]) -> None:
    sides = _labels(metrics)
    figures = metrics["figures"]
    panels = [
        (key, title)
        for key, title in MAIN_FIGURES
        if any(figures[side].get(key) is not None for side, _, _ in sides)
    ]
    win_rates = [
        (label, metrics[key])
        for key, label in (
            ("reward_win_rate", "reward model"),
            ("annotator_win_rate", "annotators"),
        )
        if metrics.get(key) is not None
    ]
    count = len(panels) + bool(win_rates)
    columns = 4
    rows = max(1, -(-count // columns))
    for index, (key, title) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        values = [figures[side].get(key) for side, _, _ in sides]
        errors = None
        if key == "score_mean":
            errors = [figures[side].get("score_sem") or 0.0 for side, _, _ in sides]
        xs = list(range(len(sides)))
        heights = [0.0 if value is None else value for value in values]
        ax.bar(xs, heights, yerr=errors, color=[color for _, _, color in sides], capsize=3)
        # Values go under the ticks: inside the axes they collide with negative bars.
        labels = [label for _, label, _ in sides]
        ticks = [f"{label}\n{_value(v)}" for label, v in zip(labels, values, strict=True)]
        ax.set_xticks(xs, ticks, fontsize=7)
        ax.set_title(title, fontsize=9)
    if win_rates:
        ax = figure.add_subplot(rows, columns, count)
        xs = list(range(len(win_rates)))
        ax.bar(xs, [rate for _, rate in win_rates], color=POLICY_COLOR)
        # 0.5 is "no better and no worse": the line a reader compares the bars with.
        ax.axhline(0.5, linestyle="--", color="grey", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_xticks(xs, [f"{label}\n{rate:.3f}" for label, rate in win_rates], fontsize=7)
        ax.set_title("Win rate of P over Q", fontsize=9)
    figure.suptitle(
        f"{metrics['policy']}"
        + (f" vs {metrics['against']}" if metrics["against"] else "")
        + f" (reference {metrics['reference']})",
        fontsize=10,
    )
