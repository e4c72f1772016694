"""`rlhf worker`: run queued retraining jobs, one at a time, each in its own process.

The job runs in a child process (`rlhf runs execute N`) so that whatever it does to the
interpreter (CUDA, threads, a crash in native code) ends with it, and so that a cancel
can stop it. Its output goes to logs/run-N.log. The worker beats the job's heartbeat
while the child lives, stops the child when a lead cancels, and records an outcome the
child could not record itself (killed, out of memory). Before each claim it marks
failed the runs whose worker stopped beating.

Under `[worker] launcher` the child starts each training or sampling step as a launch of
several ranks (loop.launched): they form a process group that the child stops with
itself, so the worker's SIGTERM (a cancel) reaches every rank, and a child killed outright
takes its launcher and ranks with it. The heartbeat goes on while the child waits for them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from db.engine import transaction
from db.models import TrainingRun, utcnow
from db.runs import child_runs, claim_next_run, mark_stale_runs
from rlhf_train.db_retry import with_retries
from rlhf_train.loop.round_next import worker_name
from rlhf_train.runs.heartbeat import Heartbeat
from rlhf_train.workspace import Workspace

# After SIGTERM, the child has this long to record its outcome before SIGKILL.
TERMINATE_GRACE_SECONDS = 30


@dataclass
class WorkerReport:
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


def log_file(workspace: Workspace, run_id: int) -> Path:
    """Where a worker-run job's whole output goes, next to its JSON-lines log."""
    return workspace.logs_dir / f"run-{run_id}.log"


def execute_command(workspace: Workspace, run_id: int) -> list[str]:
    return workspace.cli_command("runs", "execute", str(run_id))


class _Child:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.process.poll() is not None:
            return
        self.stop_reason = reason
        # The child turns SIGTERM into KeyboardInterrupt and records itself cancelled.
        self.process.terminate()
        try:
            self.process.wait(TERMINATE_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()


class ParentGone(KeyboardInterrupt):
    """The process that started this worker (`rlhf serve`) is gone; stop like Ctrl+C."""


def _check_parent(parent_pid: int | None) -> None:
    # Orphans are adopted by another process, so a changed parent pid means ours died.
    if parent_pid is not None and os.getppid() != parent_pid:
        raise ParentGone


def _wait(process: subprocess.Popen, parent_pid: int | None) -> int:
    while True:
        try:
            return process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            _check_parent(parent_pid)


def run_one(workspace: Workspace, run_id: int, worker: str, parent_pid: int | None = None) -> str:
    """Run claimed job `run_id` in a child process; returns its final status."""
    settings = workspace.config.worker
    log_path = log_file(workspace, run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with transaction(workspace.sessions) as session:
        run = session.get(TrainingRun, run_id)
        run.log_path = str(workspace.logs_dir / f"run-{run_id}.jsonl")
        attempt = run.attempts
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"=== attempt {attempt} by {worker} at {utcnow():%Y-%m-%d %H:%M:%S} UTC ===\n")
        log.flush()
        process = subprocess.Popen(
            execute_command(workspace, run_id),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
        child = _Child(process)
        with Heartbeat(
            workspace,
            run_id,
            worker,
            settings.heartbeat_seconds,
            on_cancel=lambda: child.stop("cancelled by a lead"),
            on_lost=lambda: child.stop("taken over after a stale heartbeat"),
        ):
            try:
                code = _wait(process, parent_pid)
            except KeyboardInterrupt:
                child.stop("the worker was stopped; `rlhf runs retry` resumes the run")
                _settle(workspace, run_id, worker, process.returncode or -2, child.stop_reason)
                raise
    return with_retries(
        lambda: _settle(workspace, run_id, worker, code, child.stop_reason),
        f"recording the outcome of run {run_id}",
    )


def _settle(
    workspace: Workspace, run_id: int, worker: str, code: int, stop_reason: str | None
) -> str:
    """The job's final status; set here when the child ended without recording one."""
    with transaction(workspace.sessions) as session:
        run = session.get(TrainingRun, run_id)
        if run.status != "running" or run.worker != worker:
            return run.status
        cancelled = stop_reason == "cancelled by a lead"
        status = "cancelled" if cancelled else "failed"
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        error = stop_reason or f"the run's process {how}; see {log_file(workspace, run_id)}"
        now = utcnow()
        for held in [run, *child_runs(session, run_id)]:
            if held.status == "running":
                held.status = status
                held.finished_at = now
                held.metrics = dict(held.metrics or {}) | {"error": error}
        return status


def _sleep(seconds: float, parent_pid: int | None) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        _check_parent(parent_pid)
        time.sleep(min(1.0, left))


def start_beside(workspace: Workspace) -> subprocess.Popen:
    """A worker in the background that ends with this process, its output in
    logs/worker.log: what `rlhf serve` starts so that "Start retraining" just works."""
    log_path = workspace.logs_dir / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = workspace.cli_command("worker", "--parent-pid", str(os.getpid()))
    with log_path.open("a", encoding="utf-8") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )


def _install_stop_handler() -> None:
    # A supervisor's SIGTERM stops the worker like Ctrl-C: the child is stopped and the
    # run left for a retry.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_worker(
    workspace: Workspace,
    once: bool = False,
    max_runs: int | None = None,
    name: str | None = None,
    parent_pid: int | None = None,
) -> WorkerReport:
    """Take queued jobs until stopped; with `once`, stop when the queue is empty; with
    `parent_pid`, stop when that process (the app's server) ends."""
    settings = workspace.config.worker
    worker = name or worker_name()
    report = WorkerReport()
    _install_stop_handler()
    print(f"Worker {worker} waiting for retraining jobs (Ctrl+C stops it).", flush=True)
    while max_runs is None or report.runs < max_runs:
        with transaction(workspace.sessions) as session:
            stale = mark_stale_runs(session, timedelta(seconds=settings.stale_after_seconds))
        for run_id in stale:
            print(f"Run {run_id} had no heartbeat: marked failed (retry resumes it).", flush=True)
        with transaction(workspace.sessions) as session:
            run_id = claim_next_run(session, worker)
        if run_id is None:
            if once:
                break
            _sleep(settings.poll_seconds, parent_pid)
            continue
        print(f"Run {run_id}: started; output in {log_file(workspace, run_id)}", flush=True)
        status = run_one(workspace, run_id, worker, parent_pid)
        print(f"Run {run_id}: {status}.", flush=True)
        report.runs += 1
        if status in ("succeeded", "failed", "cancelled"):
            setattr(report, status, getattr(report, status) + 1)
    return report
