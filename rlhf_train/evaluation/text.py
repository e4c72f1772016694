"""A policy evaluation as text: the Markdown report and the terminal's summary lines."""

from __future__ import annotations

from typing import Any

MARKDOWN_SAMPLES = 8
# What each policy's figures hold, in the order the Markdown table shows them, with the
# label it shows; the judges' figures follow (JUDGE_LABELS).
FIGURE_LABELS = {
    "score_mean": "Reward, mean",
    "score_std": "Reward, standard deviation",
    "score_sem": "Reward, standard error of the mean",
    "kl": "KL to the reference (nats per response)",
    "reference_perplexity": "Reference perplexity of the responses",
    "response_length": "Response length (tokens)",
    "unfinished_fraction": "Cut at max_new_tokens (share)",
    "ended_share": "Ending (end token or closed sentence, share)",
    "distinct_1": "Distinct-1",
    "distinct_2": "Distinct-2",
    "repetition_rate": "Repetition rate (share looping)",
}
FIGURE_KEYS = tuple(FIGURE_LABELS)
# Per-response lists and the intervals, which the table shows beside their figures.
NOT_FIGURES = ("n", "scores", "kl_terms", "intervals")
JUDGE_LABELS = {
    "sentiment_mean": "Sentiment (VADER compound), mean",
    "positive_share": "Sentiment positive (share)",
    "negative_share": "Sentiment negative (share)",
    "words_mean": "Words per response",
    "reviews_mean": "Review classifier P(positive), mean",
    "reviews_positive_share": "Review classifier positive (share)",
    "reviews_negative_share": "Review classifier negative (share)",
}


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _cell(text: str | None, limit: int = 200) -> str:
    """One Markdown table cell: a response on one line, pipes escaped, clipped."""
    if text is None:
        return ""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _figure_rows(metrics: dict[str, Any]) -> list[str]:
    figures = metrics["figures"]
    keys = list(FIGURE_KEYS) + [
        key for key in figures["policy"] if key not in FIGURE_KEYS and key not in NOT_FIGURES
    ]
    labels = FIGURE_LABELS | JUDGE_LABELS
    rows = []
    for key in keys:
        cells = [labels.get(key, key), _with_interval(figures["policy"], key)]
        if figures["against"]:
            cells.append(_with_interval(figures["against"], key))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _with_interval(figures: dict[str, Any], key: str) -> str:
    """A figure and, where it has one, its 95% interval: "0.81 [0.74, 0.88]"."""
    interval = (figures.get("intervals") or {}).get(key)
    text = _number(figures.get(key))
    if interval is None:
        return text
    return f"{text} [{_number(interval[0])}, {_number(interval[1])}]"


def _win_rate_line(label: str, rate: float | None, count: int, unit: str, missing: str) -> str:
    if rate is None:
        return f"- {label}: n/a ({missing})"
    return f"- {label}: {rate:.3f} over {count} {unit}"


def _leaderboard_lines(leaderboard: dict[str, Any] | None) -> list[str]:
    """The ratings of all policies from the annotators' votes, plain beside
    length-controlled (docs/evaluation.md, Leaderboard)."""
    lines = ["## Leaderboard", ""]
    if leaderboard is None:
        return lines + ["No judged pairs of two different policies yet.", ""]
    plain, controlled = leaderboard["plain"], leaderboard["style_control"]
    at_length = {row["policy"]: row for row in controlled["ratings"]}
    lines += [
        f"Bradley-Terry ratings from {plain['n_votes']} annotator votes, {_cell(plain['anchor'])} "
        f"at 1000 (400 points = 10:1 odds); 95% intervals from {plain['resamples']} bootstrap "
        "resamples over prompts. Length-controlled: at equal response length (length effect "
        f"{_number(controlled['length_coefficient'])} logits).",
        "",
        "| Rank | Policy | Rating | 95% interval | Votes | P(beats next) "
        "| Length-controlled | 95% interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in plain["ratings"]:
        other = at_length.get(row["policy"])
        cells = [
            str(row["rank"]),
            _cell(row["policy"]),
            f"{row['rating']:.0f}",
            f"[{row['low']:.0f}, {row['high']:.0f}]",
            str(row["votes"]),
            "" if row["beats_next"] is None else f"{row['beats_next']:.2f}",
            f"{other['rating']:.0f}" if other else "",
            f"[{other['low']:.0f}, {other['high']:.0f}]" if other else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if plain["unplaced"]:
        names = ", ".join(_cell(name) for name in plain["unplaced"])
        lines += [f"Not connected to {_cell(plain['anchor'])} by any comparison: {names}.", ""]
    if plain["never_compared"]:
        pairs = ", ".join(f"{_cell(a)} vs {_cell(b)}" for a, b in plain["never_compared"])
        lines += [f"Never compared: {pairs}.", ""]
    return lines


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    """report.md: the figures as a table (policy beside the other policy), the win rates,
    the plots and the first few responses side by side."""
    policy, against = report["policy"], report["against"]
    title = f"# Evaluation {report['evaluation_id']}: {policy}" + (
        f" vs {against}" if against else ""
    )
    lines = [title, ""]
    if report["round"] is not None:
        lines += [f"Round {report['round']}.", ""]
    lines += [
        f"{report['n_prompts']} {report['prompt_split']}-split prompts, one response each "
        f"(up to {report['max_new_tokens']} new tokens, temperature {report['temperature']}, "
        f"seed {report['seed']}). Reward: {report['reward'] or 'none'}. KL and perplexity "
        f"against {report['reference']}. Judges: {', '.join(report['judges']) or 'none'}. "
        "In brackets: 95% intervals, by resampling the prompts (the bootstrap; distinct-2: "
        "the jackknife).",
        "",
    ]
    lines += [f"> {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    header = ["Figure", f"P: {policy}"] + ([f"Q: {against}"] if against else [])
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *_figure_rows(report),
        "",
    ]
    if against:
        comparison = report["reward_comparison"]
        lines += [
            f"Win rate of {policy} over {against} (a tie counts half):",
            "",
            _win_rate_line(
                "by the reward model",
                report["reward_win_rate"],
                comparison["n"] if comparison else 0,
                "prompts",
                "no reward model",
            ),
            _win_rate_line(
                "by the annotators",
                report["annotator_win_rate"],
                report["annotator_judgments"],
                "judgments",
                "no judged pairs of these two policies yet",
            ),
            "",
        ]
    lines += _leaderboard_lines(report.get("leaderboard"))
    lines += [f"![{name}]({name})" for name in plots] + [""]
    lines += [f"## The first {MARKDOWN_SAMPLES} responses (all in report.json)", ""]
    columns = {"prompt": "Prompt", "policy_response": "P's response", "policy_score": "Reward"}
    if against:
        columns |= {"against_response": "Q's response", "against_score": "Reward"}
    lines += ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in report["samples"][:MARKDOWN_SAMPLES]:
        cells = [
            _number(row[column]) if column.endswith("score") else _cell(row[column])
            for column in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """What the CLI prints after `rlhf evaluate policy`."""
    figures = metrics["figures"]
    lines = [
        f"{metrics['policy']} on {metrics['n_prompts']} {metrics['prompt_split']}-split prompts"
        + (f", against {metrics['against']}" if metrics["against"] else "")
        + f" (reference {metrics['reference']}; reward {metrics['reward'] or 'none'}):"
    ]
    for side in ("policy", "against"):
        side_figures = figures[side]
        if side_figures is None:
            continue
        parts = [
            f"reward {_number(side_figures['score_mean'])} ± {_number(side_figures['score_sem'])}",
            f"KL {_number(side_figures['kl'])}",
            f"length {_number(side_figures['response_length'])}",
            f"distinct-2 {_number(side_figures['distinct_2'])}",
            f"repetition {_number(side_figures['repetition_rate'])}",
        ]
        parts += [
            f"{label} {_number(side_figures[key])}"
            for key, label in (("sentiment_mean", "sentiment"), ("words_mean", "words"))
            if key in side_figures
        ]
        lines.append(f"  {metrics[side]}: " + ", ".join(parts))
    if metrics["against"]:
        lines.append(
            f"  win rate of {metrics['policy']}: reward model "
            f"{_number(metrics['reward_win_rate'])}, annotators "
            f"{_number(metrics['annotator_win_rate'])} "
            f"({metrics['annotator_judgments']} judgments)"
        )
    lines += [f"  note: {note}" for note in metrics["notes"]]
    return lines
