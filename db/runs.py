"""Training runs as records: the queue a worker takes runs from, and what the app shows.

A run is `queued` until a worker claims it. Claiming is one conditional UPDATE (status
still queued), so two workers racing for the same run cannot both win, on SQLite and
PostgreSQL alike. While a run works, its heartbeat is refreshed; a `running` run whose
heartbeat is older than the stale limit belongs to a worker or machine that died, and
is marked failed. Retrying a failed or cancelled run queues it again; the code that runs
it resumes from its checkpoints.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import RUN_KINDS, TrainingRun, utcnow

# A run someone still has to work on: waiting for a worker, or held by one.
ACTIVE = ("queued", "running")
RETRYABLE = ("failed", "cancelled")


def enqueue_run(
    session: Session,
    kind: str,
    config: dict[str, Any],
    created_by_id: int | None,
    round_id: int | None = None,
) -> TrainingRun:
    if kind not in RUN_KINDS:
        raise UserError(f"Unknown training kind {kind!r}; use one of: {', '.join(RUN_KINDS)}.")
    run = TrainingRun(
        kind=kind, config=config, status="queued", created_by_id=created_by_id, round_id=round_id
    )
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, limit: int = 50) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise UserError(f"There is no training run {run_id}; `rlhf runs list` shows the runs.")
    return run


def child_runs(session: Session, run_id: int) -> list[TrainingRun]:
    """The step runs of a retraining job, in the order they started."""
    query = select(TrainingRun).where(TrainingRun.parent_id == run_id).order_by(TrainingRun.id)
    return list(session.scalars(query))


def claim_run(session: Session, run_id: int, worker: str) -> bool:
    """Mark run `run_id` running for `worker` if it is still queued; False if another
    worker was first. One conditional UPDATE: only one of several claims can win."""
    now = utcnow()
    claimed = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
        .values(
            status="running",
            worker=worker,
            attempts=TrainingRun.attempts + 1,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            cancel_requested=False,
        )
        .execution_options(synchronize_session=False)
    )
    return claimed.rowcount == 1


def claim_next_run(
    session: Session, worker: str, kinds: tuple[str, ...] = ("round",)
) -> int | None:
    """Take the oldest queued run of `kinds` for `worker`; None when there is none.

    The caller commits at once, so that other workers see the claim.
    """
    candidates = session.scalars(
        select(TrainingRun.id)
        .where(TrainingRun.status == "queued", TrainingRun.kind.in_(kinds))
        .order_by(TrainingRun.id)
        .limit(5)
    ).all()
    for run_id in candidates:
        if claim_run(session, run_id, worker):
            return run_id
    return None


def beat(session: Session, run_id: int, worker: str) -> bool:
    """Refresh the heartbeat of a run this worker holds; False when it no longer holds it
    (another worker took it over after a stale heartbeat, or a lead retried it)."""
    done = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.worker == worker)
        .where(TrainingRun.status == "running")
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def mark_stale_runs(
    session: Session, stale_after: timedelta, now: datetime | None = None
) -> list[int]:
    """Mark failed every running run whose heartbeat is older than `stale_after`."""
    now = now or utcnow()
    limit = now - stale_after
    # Only runs a worker holds: a `rlhf train` in a terminal beats only at its steps,
    # which may be minutes apart, and its user sees whether it still runs.
    stale = session.scalars(
        select(TrainingRun).where(
            TrainingRun.status == "running",
            TrainingRun.worker.is_not(None),
            (TrainingRun.heartbeat_at.is_(None)) | (TrainingRun.heartbeat_at < limit),
        )
    ).all()
    stale = list(stale) + [
        step for run in stale for step in child_runs(session, run.id) if step.status == "running"
    ]
    for run in stale:
        seen = run.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S UTC") if run.heartbeat_at else "never"
        run.status = "failed"
        run.finished_at = now
        run.metrics = dict(run.metrics or {}) | {
            "error": f"no heartbeat since {seen}: its worker or machine stopped; "
            f"`rlhf runs retry {run.parent_id or run.id}` resumes it from its last checkpoint"
        }
    session.flush()
    return [run.id for run in stale]


def request_cancel(session: Session, run_id: int) -> TrainingRun:
    """A queued run is cancelled at once; a running one when its worker sees the request."""
    run = get_run(session, run_id)
    if run.status == "queued":
        run.status = "cancelled"
        run.finished_at = utcnow()
    elif run.status == "running":
        run.cancel_requested = True
    else:
        raise UserError(
            f"Run {run_id} is {run.status}; only queued or running runs can be cancelled."
        )
    session.flush()
    return run


def retry_run(session: Session, run_id: int) -> TrainingRun:
    """Queue a failed or cancelled run again; its next attempt resumes from checkpoints."""
    run = get_run(session, run_id)
    if run.status not in RETRYABLE:
        raise UserError(
            f"Run {run_id} is {run.status}; only failed or cancelled runs can be retried."
        )
    if run.parent_id is not None:
        raise UserError(
            f"Run {run_id} is a step of retraining job {run.parent_id}; retry the job instead."
        )
    run.status = "queued"
    run.cancel_requested = False
    run.worker = None
    run.finished_at = None
    session.flush()
    return run
