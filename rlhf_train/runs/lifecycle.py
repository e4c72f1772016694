"""The one lifecycle every trainer shares: resume → start run → train → publish the
model → finish the run → delete its checkpoints.

SFT, reward training and the four policy optimizers differ in what they train; how a
run is recorded around the training is the same for all of them and lives here:

- `resume_point` finds the run `--resume` continues and its last complete checkpoint;
- `recorded_run` starts (or restarts) the run in the main process and records it
  failed or cancelled if training raises;
- `new_model_name` is the model's name (`KIND-RUN` unless the user chose one), checked
  to be free before the slow part;
- `publish_trained` writes and registers the model, marks the run succeeded and deletes
  its checkpoints (a succeeded run cannot be resumed), giving the one result type.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from db.models import TrainingRun
from rlhf_train.distributed import from_main_process
from rlhf_train.errors import UserError
from rlhf_train.models.publish import NewModel, check_new_model, publish_model
from rlhf_train.runs.record import (
    finish_run,
    outcome_recorded,
    run_checkpoints,
    run_to_resume,
    start_run,
)
from rlhf_train.runs.trainer_args import last_checkpoint
from rlhf_train.workspace import Workspace

T = TypeVar("T")


@dataclass
class TrainedModel:
    """What a training command gives back: the new model and the run that made it."""

    name: str
    model_id: int | None  # None in the processes of a multi-process run but the main one
    path: Path
    run_id: int
    metrics: dict[str, Any]
    report: Any = None  # the reward model's diagnostics (RewardReport), when it has them


def resume_point(workspace: Workspace, kind: str, run_id: int | None) -> tuple[TrainingRun, Path]:
    """The run of `kind` that `--resume` continues (`run_id`, else the newest unfinished
    one) and its last complete checkpoint."""
    run = run_to_resume(workspace, kind, run_id)
    checkpoint = last_checkpoint(run_checkpoints(workspace, run.id))
    if checkpoint is None:
        raise UserError(
            f"The {kind} run {run.id} stopped before its first checkpoint, so there is nothing "
            "to resume; start it again without --resume."
        )
    return run, checkpoint


def recorded_run(
    workspace: Workspace,
    kind: str,
    config: dict[str, Any],
    train: Callable[[int], T],
    *,
    export_id: int | None = None,
    resumed_run: int | None = None,
) -> T:
    """Start the run (the main process writes; every process learns its id), then call
    `train(run_id)`; a failure or Ctrl-C inside is recorded with the run and raised on."""
    run_id = from_main_process(
        lambda: start_run(workspace, kind, config, export_id, run_id=resumed_run)
    )
    with outcome_recorded(workspace, run_id):
        return train(run_id)


def new_model_name(workspace: Workspace, requested: str | None, kind: str, run_id: int) -> str:
    """The new model's name, `KIND-RUN` by default, refused now if it is taken."""
    if requested is not None:
        return requested  # checked before the run was recorded
    name = f"{kind}-{run_id}"
    check_new_model(workspace, name)
    return name


def publish_trained(
    workspace: Workspace, run_id: int, new: NewModel, write: Callable[[Path], None]
) -> TrainedModel:
    """Write and register the model, mark the run succeeded with the model's metrics,
    and delete the run's checkpoints: only disk space once nothing can resume it."""
    registered = publish_model(workspace, new, write)
    finish_run(workspace, run_id, "succeeded", new.metrics, registered.id)
    shutil.rmtree(run_checkpoints(workspace, run_id), ignore_errors=True)
    return TrainedModel(new.name, registered.id, Path(registered.path), run_id, new.metrics)
