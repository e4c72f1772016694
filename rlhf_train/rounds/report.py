"""`rlhf rounds show`: one round described in plain text."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.rounds import (
    example_pairs,
    get_round,
    pair_counts_by_strategy,
    round_summaries,
    sample_stats,
)

EXAMPLE_CHARS = 160


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 1] + "…"


def describe_round(session: Session, number: int) -> str:
    round_ = get_round(session, number)
    summary = next(s for s in round_summaries(session) if s.number == number)
    samples = sample_stats(session, round_)
    strategies = pair_counts_by_strategy(session, round_)
    lines = [
        f"Round {round_.number} ({round_.status}), created {round_.created_at:%Y-%m-%d %H:%M} UTC",
        f"  policy:          {summary.policy}",
        f"  previous policy: {summary.previous_policy or '-'}",
        f"  overlap:         {round_.overlap} judgments per pair; gold rate {round_.gold_rate:.0%}",
        f"  shown as:        {round_.render} ("
        + ("rendered Markdown" if round_.render == "markdown" else "plain text")
        + " in the annotate page)",
        "  kind:            "
        + (
            f"ranking, {round_.rank_k} responses per task, one ranking each"
            if round_.kind == "ranking"
            else "pairwise, two responses per pair"
        ),
        f"  prompts:         {summary.prompts}",
        f"  samples:         {samples['samples']} (mean {samples['mean_tokens']:.1f} tokens, "
        f"{samples['unfinished']} cut at the length limit)",
        f"  pairs:           {summary.pairs} ("
        + (", ".join(f"{n} {name}" for name, n in strategies.items()) or "none")
        + ")",
        f"  judgments:       {summary.judgments} of {summary.judgments_needed} needed",
    ]
    examples = example_pairs(session, round_)
    if examples:
        lines.append("")
        lines.append("Example pairs:")
    for pair in examples:
        lines.append(f"  #{pair.id} prompt: {_clip(pair.prompt.text)}")
        lines.append(f"     A ({pair.sample_a.policy.name}): {_clip(pair.sample_a.text)}")
        lines.append(f"     B ({pair.sample_b.policy.name}): {_clip(pair.sample_b.text)}")
    return "\n".join(lines)
