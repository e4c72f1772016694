"""Training runs as records: what the lead's "Start retraining" button writes, and the
list the app shows. The worker that runs them is a separate piece."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import RUN_KINDS, TrainingRun


def enqueue_run(
    session: Session, kind: str, config: dict[str, Any], created_by_id: int | None
) -> TrainingRun:
    if kind not in RUN_KINDS:
        raise UserError(f"Unknown training kind {kind!r}; use one of: {', '.join(RUN_KINDS)}.")
    run = TrainingRun(kind=kind, config=config, status="queued", created_by_id=created_by_id)
    session.add(run)
    session.flush()
    return run


def list_runs(session: Session, limit: int = 50) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))
