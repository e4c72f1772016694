"""A new model becomes real in two steps, its folder under models/ and its registry row;
these functions do both or neither, so neither ever exists without the other."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.engine import transaction
from db.models import Model
from db.registry import find_model, register_model
from rlhf_train.db_retry import with_retries
from rlhf_train.errors import UserError
from rlhf_train.models.folder import check_model_name, publish_folder
from rlhf_train.workspace import Workspace


def check_new_model(workspace: Workspace, name: str) -> Path:
    """The folder a new model `name` will get; an error if the name is bad or taken."""
    check_model_name(name)

    def taken() -> bool:
        with workspace.sessions() as session:
            return find_model(session, name) is not None

    # Asked again after a training run: a database away for a minute must not cost it.
    if with_retries(taken, f"checking the model name {name!r}"):
        raise UserError(f"A model named {name!r} is already registered; choose another --name.")
    target = workspace.models_dir / name
    if target.exists():
        raise UserError(f"{target} already exists; choose another --name or remove the folder.")
    return target


@dataclass(frozen=True)
class NewModel:
    """What the registry row of a model about to be published will say."""

    name: str
    kind: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    parent_id: int | None = None
    training_run_id: int | None = None
    promote: bool = False


def register_folder(workspace: Workspace, target: Path, new: NewModel) -> Model:
    """Register the published folder `target` as the model `new` describes.

    Safe to call again for the same folder: when an earlier call committed and only its
    answer was lost with the connection, the row it made is returned, not made twice.
    """
    with transaction(workspace.sessions) as session:
        earlier = find_model(session, new.name)
        if earlier is not None and earlier.path == str(target):
            session.expunge(earlier)
            return earlier
        parent = session.get(Model, new.parent_id) if new.parent_id is not None else None
        model = register_model(
            session,
            name=new.name,
            kind=new.kind,
            path=str(target),
            parent=parent,
            config=new.config,
            promote=new.promote,
        )
        model.training_run_id = new.training_run_id
        model.metrics = new.metrics
        session.flush()
        session.expunge(model)
        return model


def publish_model(workspace: Workspace, new: NewModel, write: Callable[[Path], None]) -> Model:
    """Write the folder with `write(staging)`, then register it as the model `new`."""
    target = publish_folder(check_new_model(workspace, new.name), write, new.metrics)
    try:
        # The weights are on disk by now: a database restart is waited out rather than
        # throwing them away with the run that made them.
        return with_retries(
            lambda: register_folder(workspace, target, new), f"registering model {new.name!r}"
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
