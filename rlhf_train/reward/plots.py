"""PNG plots of a reward model's diagnostics, from the dict `reward_diagnostics` returns.

Three small figures answer the questions to ask before PPO at a glance: are the model's
preference probabilities trustworthy (reliability diagram), does it separate chosen from
rejected responses (reward histograms), and where does it fail (accuracy by annotator
agreement and strength, against the "pick the longer response" baseline). Figures are drawn
on their own Agg canvas, never through pyplot, so this works on headless training machines
and does not leak figures or touch global state in a long-running process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIGSIZE = (5.0, 3.5)
DPI = 100
PLOT_FILES = ("calibration.png", "reward_distribution.png", "accuracy_by_bucket.png")
CHOSEN_COLOR = "tab:green"
REJECTED_COLOR = "tab:red"


def write_reward_plots(diagnostics: dict[str, Any], folder: Path) -> list[Path]:
    """Write calibration.png, reward_distribution.png and accuracy_by_bucket.png into
    `folder` (created if missing) and return their paths in that order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in zip(
        PLOT_FILES, (_draw_calibration, _draw_distribution, _draw_accuracy), strict=True
    ):
        figure = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(figure)
        draw(figure, diagnostics)
        figure.tight_layout()
        path = folder / name
        figure.savefig(path, format="png")
        paths.append(path)
    return paths


def _draw_calibration(figure: Figure, diagnostics: dict[str, Any]) -> None:
    calibration = diagnostics["calibration"]
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="Perfectly calibrated")
    filled = [b for b in calibration["bins"] if b["n"] and b["mean_predicted"] is not None]
    predicted = [b["mean_predicted"] for b in filled]
    observed = [b["observed_rate"] for b in filled]
    ax.plot(predicted, observed, marker="o", color="tab:blue", label="Reward model")
    for x, y, b in zip(predicted, observed, filled, strict=True):
        ax.annotate(
            f"n={b['n']}",
            (x, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=6,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("Predicted probability the first response is preferred")
    ax.set_ylabel("Share where it was preferred")
    ax.set_title(f"Calibration (ECE = {calibration['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=7)


def _draw_distribution(figure: Figure, diagnostics: dict[str, Any]) -> None:
    histogram = diagnostics["distribution"]["histogram"]
    ax = figure.add_subplot()
    for key, label, color in (
        ("chosen", "Chosen responses", CHOSEN_COLOR),
        ("rejected", "Rejected responses", REJECTED_COLOR),
    ):
        ax.stairs(histogram[key], histogram["edges"], fill=True, alpha=0.45, color=color)
        ax.stairs(histogram[key], histogram["edges"], color=color, label=label)
    ax.set_xlabel("Reward")
    ax.set_ylabel("Number of responses")
    ax.set_title("Rewards of chosen and rejected responses")
    ax.legend(fontsize=7)


def _draw_accuracy(figure: Figure, diagnostics: dict[str, Any]) -> None:
    ax = figure.add_subplot()
    groups = [
        ("By annotator agreement", diagnostics["by_agreement"], "tab:blue"),
        ("By preference strength", diagnostics["by_strength"], "tab:orange"),
    ]
    labels: list[str] = []
    ticks: list[float] = []
    position = 0.0
    for group_label, buckets, color in groups:
        xs, heights, counts = [], [], []
        for bucket in buckets:
            labels.append(bucket["bucket"])
            ticks.append(position)
            # An empty bucket keeps its tick but gets no bar, so the axis reads the same
            # for every model.
            if bucket["accuracy"] is not None:
                xs.append(position)
                heights.append(bucket["accuracy"])
                counts.append(bucket["n"])
            else:
                ax.text(position, 0.02, "n=0", ha="center", va="bottom", fontsize=6)
            position += 1
        ax.bar(xs, heights, width=0.7, color=color, label=group_label)
        # Counts sit inside the bars' feet, clear of the reference lines near the tops.
        for x, n in zip(xs, counts, strict=True):
            ax.text(x, 0.02, f"n={n}", ha="center", va="bottom", fontsize=6, color="white")
        position += 0.5  # gap between the two groups
    ax.set_xticks(ticks, labels, fontsize=7, rotation=20, ha="right")

    ax.axhline(
        diagnostics["accuracy"],
        linestyle="--",
        color="black",
        linewidth=1,
        label=f"Overall ({diagnostics['accuracy']:.2f})",
    )
    longer_wins = diagnostics["length"]["longer_wins_accuracy"]
    ax.axhline(
        longer_wins,
        linestyle="--",
        color="tab:purple",
        linewidth=1,
        label=f"Longer response wins ({longer_wins:.2f})",
    )
    # Headroom above 1.0 keeps the legend off the bars.
    ax.set_ylim(0, 1.4)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("Pairwise accuracy")
    ax.set_title("Accuracy by annotator agreement and strength")
    ax.legend(fontsize=6, loc="upper center", ncol=2)
