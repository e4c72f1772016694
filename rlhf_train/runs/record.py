"""A training run's row in training_runs, kept current while the run works.

The row is what the app's runs page and `--resume` read: its settings, progress,
heartbeat, metrics and outcome. The loss curve goes to a JSON-lines log in the
workspace's logs folder, one line per Trainer log event.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from transformers import TrainerCallback

from db.engine import transaction
from db.models import TrainingRun, utcnow
from rlhf_train.db_retry import with_retries
from rlhf_train.distributed import process_count
from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace

UNFINISHED = ("queued", "running", "failed", "cancelled")

# While a retraining job runs its steps, the runs they record belong to it: (job, round).
_job: ContextVar[tuple[int, int | None] | None] = ContextVar("prefloop_job", default=None)


@contextmanager
def part_of_job(job_id: int, round_id: int | None) -> Iterator[None]:
    """Runs started in this block record `job_id` as their parent and learn from `round_id`,
    so that a policy can be traced to its retraining job and the judgments behind it."""
    token = _job.set((job_id, round_id))
    try:
        yield
    finally:
        _job.reset(token)


def start_run(
    workspace: Workspace,
    kind: str,
    config: dict[str, Any],
    export_id: int | None = None,
    run_id: int | None = None,
) -> int:
    """Mark run `run_id` (queued or resumed) as running, or create a new running run."""
    with transaction(workspace.sessions) as session:
        run = session.get(TrainingRun, run_id) if run_id is not None else None
        if run is None:
            parent_id, round_id = _job.get() or (None, None)
            run = TrainingRun(
                kind=kind,
                config=config,
                export_id=export_id,
                parent_id=parent_id,
                round_id=round_id,
            )
            session.add(run)
            session.flush()
        run.status = "running"
        run.started_at = run.started_at or utcnow()
        run.heartbeat_at = utcnow()
        run.finished_at = None
        run.log_path = str(workspace.logs_dir / f"run-{run.id}.jsonl")
        # What a resume must run with (its checkpoint is per rank) and what the runs show.
        run.metrics = dict(run.metrics or {}) | {"processes": process_count()}
        return run.id


def finish_run(
    workspace: Workspace,
    run_id: int,
    status: str,
    metrics: dict[str, Any],
    output_model_id: int | None = None,
) -> None:

    def write() -> None:
        with transaction(workspace.sessions) as session:
            run = session.get(TrainingRun, run_id)
            run.status = status
            run.metrics = dict(run.metrics or {}) | metrics
            run.output_model_id = output_model_id
            run.finished_at = utcnow()
            run.heartbeat_at = run.finished_at
            if status == "succeeded":
                run.progress = 1.0

    with_retries(write, f"recording that run {run_id} {status}")


@contextmanager
def outcome_recorded(workspace: Workspace, run_id: int) -> Iterator[None]:
    """Marks run `run_id` cancelled (Ctrl-C) or failed (any other exception, with its
    message) when the body raises; the main process writes, the exception goes on."""
    from rlhf_train.distributed import is_main_process

    try:
        yield
    except KeyboardInterrupt:
        if is_main_process():
            finish_run(workspace, run_id, "cancelled", {"error": "interrupted"})
        raise
    except BaseException as exc:
        if is_main_process():
            finish_run(workspace, run_id, "failed", {"error": str(exc) or type(exc).__name__})
        raise


def run_to_resume(workspace: Workspace, kind: str, run_id: int | None) -> TrainingRun:
    """The run `--resume` continues: `run_id`, else the newest unfinished run of `kind`."""
    with workspace.sessions() as session:
        if run_id is not None:
            run = session.get(TrainingRun, run_id)
            if run is None or run.kind != kind:
                raise UserError(
                    f"There is no {kind} run {run_id}; `rlhf runs list` shows the runs."
                )
        else:
            run = session.scalar(
                select(TrainingRun)
                .where(TrainingRun.kind == kind, TrainingRun.status.in_(UNFINISHED))
                .order_by(TrainingRun.id.desc())
                .limit(1)
            )
            if run is None:
                raise UserError(
                    f"There is no unfinished {kind} run to resume; start one without --resume."
                )
        if run.status == "succeeded":
            raise UserError(f"Run {run.id} already succeeded; there is nothing to resume.")
        session.expunge(run)
        return run


def run_checkpoints(workspace: Workspace, run_id: int) -> Path:
    """The folder the Trainer of run `run_id` checkpoints into."""
    return workspace.root / "checkpoints" / f"run-{run_id}"


class RunLog:
    """A run's JSON-lines log, and its progress and heartbeat in the database.

    The database is written at most every `interval` seconds: the row is a dashboard,
    and SQLite has one writer for everyone, annotators included.
    """

    def __init__(self, workspace: Workspace, run_id: int, interval: float = 2.0) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.interval = interval
        self.path = workspace.logs_dir / f"run-{run_id}.jsonl"
        self._last_write = 0.0

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def progress(self, done: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.interval:
            return
        self._last_write = now
        try:
            with transaction(self.workspace.sessions) as session:
                run = session.get(TrainingRun, self.run_id)
                run.progress = min(1.0, done / total) if total else 0.0
                run.heartbeat_at = utcnow()
        except OperationalError as error:
            # A dashboard row can wait for the next step; the training must not stop.
            reason = str(error.orig or error).strip().splitlines()[0]
            print(f"warning: progress not recorded ({reason})", file=sys.stderr, flush=True)


class RunProgress(TrainerCallback):
    """Writes a Trainer's logs and progress through a RunLog (main process only)."""

    def __init__(self, workspace: Workspace, run_id: int, interval: float = 2.0) -> None:
        self.log = RunLog(workspace, run_id, interval)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        numbers = {key: value for key, value in logs.items() if isinstance(value, int | float)}
        self.log.write({"step": state.global_step, "epoch": state.epoch} | numbers)
        self.log.progress(state.global_step, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.log.progress(state.global_step, state.max_steps, force=True)


def read_run_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's JSON-lines log; a missing file has none."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
