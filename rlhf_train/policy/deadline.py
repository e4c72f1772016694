"""`--time-limit`: stop an optimizer after a wall-clock budget, keeping what it learned.

Under a multi-process launch every process must stop after the same step, or the others
wait forever in their next gradient all-reduce; the main process's clock decides.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback


class Deadline:
    def __init__(self, minutes: float | None) -> None:
        self.end = time.monotonic() + minutes * 60 if minutes else None
        self.reached = False

    def passed(self) -> bool:
        if self.end is None:
            return False
        from accelerate import PartialState

        decision = [time.monotonic() >= self.end]
        if PartialState().num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(decision, from_process=0)
        self.reached = bool(decision[0])
        return self.reached


class DeadlineCallback(TrainerCallback):
    """Ends a Trainer's run at the first step that finishes after the deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def on_step_end(self, args, state, control, **kwargs):
        if self.deadline.passed():
            control.should_training_stop = True
