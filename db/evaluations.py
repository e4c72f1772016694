"""Policy evaluations as records, and what annotators said about two policies head to head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Evaluation, Judgment, Pair, Sample


def add_evaluation(
    session: Session,
    *,
    policy_id: int,
    metrics: dict[str, Any],
    report_path: str,
    against_id: int | None = None,
    reward_model_id: int | None = None,
    round_id: int | None = None,
) -> Evaluation:
    evaluation = Evaluation(
        policy_id=policy_id,
        against_id=against_id,
        reward_model_id=reward_model_id,
        round_id=round_id,
        metrics=metrics,
        report_path=report_path,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def list_evaluations(session: Session) -> list[Evaluation]:
    """Oldest first, so that a chart across rounds reads left to right."""
    return list(session.scalars(select(Evaluation).order_by(Evaluation.id)))


@dataclass(frozen=True)
class HeadToHead:
    """Annotator judgments on pairs of one sample of `policy` and one of `against`."""

    wins: int
    losses: int
    ties: int  # ties and both-bad: neither response preferred

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float | None:
        """Share of judgments preferring `policy`, a tie counting half; None without any."""
        return (self.wins + self.ties / 2) / self.judged if self.judged else None


def head_to_head(session: Session, policy_id: int, against_id: int) -> HeadToHead:
    """Judgments, skips left out, on pairs where one sample is by each policy."""
    sample_a, sample_b = aliased(Sample), aliased(Sample)
    rows = session.execute(
        select(Judgment.choice, sample_a.policy_id, sample_b.policy_id)
        .join(Pair, Judgment.pair_id == Pair.id)
        .join(sample_a, Pair.sample_a_id == sample_a.id)
        .join(sample_b, Pair.sample_b_id == sample_b.id)
        .where(Judgment.choice != "skip")
        .where(
            ((sample_a.policy_id == policy_id) & (sample_b.policy_id == against_id))
            | ((sample_a.policy_id == against_id) & (sample_b.policy_id == policy_id))
        )
    ).all()
    wins = losses = ties = 0
    for choice, policy_of_a, _ in rows:
        if choice in ("tie", "both_bad"):
            ties += 1
        elif (choice == "A") == (policy_of_a == policy_id):
            wins += 1
        else:
            losses += 1
    return HeadToHead(wins, losses, ties)


def record_annotator_verdict(session: Session, policy_id: int, against_id: int) -> HeadToHead:
    """Put the annotators' head-to-head of two policies into their latest evaluation.

    A retraining evaluates its new policy before anyone has judged it; the annotators'
    verdict arrives with the next round's new-vs-previous pairs, and is filed here when
    that round closes, so the Progress page shows both win rates on one point.
    """
    verdict = head_to_head(session, policy_id, against_id)
    evaluation = session.scalar(
        select(Evaluation)
        .where(Evaluation.policy_id == policy_id, Evaluation.against_id == against_id)
        .order_by(Evaluation.id.desc())
        .limit(1)
    )
    if evaluation is not None and verdict.judged:
        evaluation.metrics = dict(evaluation.metrics) | {
            "annotator_win_rate": verdict.win_rate,
            "annotator_judgments": verdict.judged,
            "annotator_comparison": {
                "wins": verdict.wins,
                "losses": verdict.losses,
                "ties": verdict.ties,
            },
        }
        session.flush()
    return verdict
