"""A thread that keeps a held run's heartbeat fresh and notices a lead's cancel request.

The heartbeat is what tells a dead run from a slow one: `rlhf worker` marks a running
run failed once its heartbeat is older than worker.stale_after_seconds. It beats from
a thread of the process that holds the run, not from the training loop, so a slow step
(loading a model, a long PPO rollout) is never mistaken for a dead machine.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from db.engine import transaction
from db.models import TrainingRun
from db.runs import ACTIVE, beat
from rlhf_train.workspace import Workspace


class Heartbeat:
    def __init__(
        self,
        workspace: Workspace,
        run_id: int,
        worker: str,
        interval: float,
        on_cancel: Callable[[], None],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.worker = worker
        self.interval = interval
        self.on_cancel = on_cancel
        # Someone else holds the run now (it was marked stale and retried): stop working
        # on it, or two processes would write the same checkpoints.
        self.on_lost = on_lost or on_cancel
        self.cancelled = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat_once()
            except OperationalError as error:
                # The database may be back at the next beat; the stale limit is minutes.
                reason = str(error.orig or error).strip().splitlines()[0]
                print(f"warning: heartbeat not recorded ({reason})", file=sys.stderr, flush=True)

    def beat_once(self) -> None:
        with transaction(self.workspace.sessions) as session:
            held = beat(session, self.run_id, self.worker)
            run = session.get(TrainingRun, self.run_id)
            wanted_cancel, status = run.cancel_requested, run.status
        # A run that has ended is not held either, but nobody else is working on it: its
        # holder recorded the end a moment before this thread was stopped (or a stale
        # sweep did, and then a retry makes it queued). Stopping the holder then would
        # interrupt whatever it does next.
        taken_over = not held and status in ACTIVE
        if taken_over and not self.lost:
            self.lost = True
            print(
                f"warning: run {self.run_id} is no longer held by {self.worker}",
                file=sys.stderr,
                flush=True,
            )
            self.on_lost()
        if wanted_cancel and not self.cancelled:
            self.cancelled = True
            self.on_cancel()
