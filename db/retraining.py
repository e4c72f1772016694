"""Which round a retraining starts from, whether it may start, and queueing it.

A retraining job (a training run of kind "round") learns from one round's judgments:
the newest round, closed by the job if still open. The checks here are the ones a lead
gets before anything is queued or closed, in the app and on the command line alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import Judgment, Pair, Round, TrainingRun
from db.runs import ACTIVE


def judgments_in_round(session: Session, round_id: int) -> int:
    """Judgments that say something (skips left out)."""
    query = (
        select(func.count(Judgment.id))
        .join(Pair, Judgment.pair_id == Pair.id)
        .where(Pair.round_id == round_id, Judgment.choice != "skip")
    )
    return session.scalar(query) or 0


def active_retraining(session: Session) -> TrainingRun | None:
    return session.scalar(
        select(TrainingRun)
        .where(TrainingRun.kind == "round", TrainingRun.status.in_(ACTIVE))
        .order_by(TrainingRun.id)
        .limit(1)
    )


def trained_from(session: Session, round_id: int) -> TrainingRun | None:
    """The retraining job that already succeeded on this round's judgments, if any."""
    return session.scalar(
        select(TrainingRun)
        .where(
            TrainingRun.kind == "round",
            TrainingRun.round_id == round_id,
            TrainingRun.status == "succeeded",
        )
        .limit(1)
    )


def round_to_retrain(session: Session, min_judgments: int, number: int | None = None) -> Round:
    """The round a new retraining learns from (the newest, or `number`), checked."""
    if number is None:
        round_ = session.scalar(select(Round).order_by(Round.number.desc()).limit(1))
        if round_ is None:
            raise UserError(
                "There is no round to retrain from; generate one with `rlhf generate --round 1` "
                "(or `rlhf up`) and collect judgments first."
            )
    else:
        round_ = session.scalar(select(Round).where(Round.number == number))
        if round_ is None:
            raise UserError(f"There is no round {number}; `rlhf rounds list` shows the rounds.")
    done = trained_from(session, round_.id)
    if done is not None:
        raise UserError(
            f"Round {round_.number} was already trained from (run {done.id}); collect "
            "judgments in the next round before retraining again."
        )
    judged = judgments_in_round(session, round_.id)
    if judged == 0:
        raise UserError(
            f"Round {round_.number} has no judgments yet, so there is nothing new to learn "
            "from; annotate some pairs first."
        )
    if judged < min_judgments:
        raise UserError(
            f"Round {round_.number} has {judged} judgments and retraining needs at least "
            f"{min_judgments} (loop.min_judgments); collect more or lower the setting."
        )
    return round_


def enqueue_retraining(
    session: Session,
    config: dict[str, Any],
    created_by_id: int | None,
    min_judgments: int,
    number: int | None = None,
) -> TrainingRun:
    """Queue a retraining job for the worker, after the checks of `round_to_retrain`."""
    active = active_retraining(session)
    if active is not None:
        raise UserError(
            f"Retraining run {active.id} is already {active.status}; wait for it or cancel it."
        )
    round_ = round_to_retrain(session, min_judgments, number)
    run = TrainingRun(
        kind="round",
        config=dict(config) | {"round": round_.number},
        status="queued",
        created_by_id=created_by_id,
        round_id=round_.id,
    )
    session.add(run)
    session.flush()
    return run
