"""Turn what a user typed for a model (a registered name, a built-in name, a local
folder or a hub id) into a registered model row and a folder or id to load from."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Model
from db.registry import current_policy, find_model, lineage, register_model
from rlhf_train.errors import UserError
from rlhf_train.models.builtin import BUILTIN_MODELS


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def _check_model_folder(folder: Path) -> None:
    # A LoRA adapter folder has adapter_config.json instead; it names its base model.
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise UserError(
            f"{folder} is not a model folder (it has no config.json or adapter_config.json); "
            "pass a folder written by save_pretrained, a registered model name "
            "(`rlhf models list`) or a hub id."
        )


def _hub_id_available(hub_id: str) -> bool:
    """Whether transformers can find `hub_id` (in the local hub cache, or online)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(hub_id)
    except (OSError, ValueError):
        return False
    return True


def _unused_name(session: Session, wanted: str) -> str:
    name, suffix = wanted, 2
    while find_model(session, name) is not None:
        name, suffix = f"{wanted}-{suffix}", suffix + 1
    return name


def resolve_policy(session: Session, spec: str, models_cache: Path) -> Model:
    """The registered policy named by `spec`, registering it first if it is new.

    The first policy a workspace registers becomes its current policy, whether it is
    the built-in default or the team's own model.
    """
    registered = find_model(session, spec)
    if registered is not None:
        if registered.kind != "policy":
            raise UserError(f"{spec!r} is a {registered.kind} model, not a policy; pass a policy.")
        return registered
    builtin = BUILTIN_MODELS.get(spec)
    if builtin is not None:
        if builtin.kind != "policy":
            raise UserError(f"The built-in {spec!r} is a {builtin.kind} model, not a policy.")
        folder = builtin.materialize(models_cache)
        return register_model(
            session,
            name=spec,
            kind="policy",
            path=str(folder),
            config={"builtin": builtin.description},
            promote=current_policy(session) is None,
        )
    if not Path(spec).expanduser().exists() and not _looks_like_hub_id(spec):
        raise UserError(
            f"No model {spec!r}: it is not a registered name, a built-in "
            f"({', '.join(BUILTIN_MODELS)}), a folder or a hub id; `rlhf models list` shows "
            "what is registered."
        )
    location = check_model_spec(spec)
    known = session.scalar(select(Model).where(Model.path == location))
    if known is not None:
        return known
    wanted = Path(location).name if Path(location).is_absolute() else location
    return register_model(
        session,
        name=_unused_name(session, wanted),
        kind="policy",
        path=location,
        promote=current_policy(session) is None,
    )


def check_model_spec(location: str) -> str:
    """`location` as stored in the registry: an absolute folder path or an available hub id."""
    folder = Path(location).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise UserError(
                f"{location} is a file, not a model folder; pass the folder holding it."
            )
        _check_model_folder(folder)
        return str(folder.resolve())
    if _looks_like_hub_id(location) and _hub_id_available(location):
        return location
    raise UserError(
        f"{location} is neither a model folder nor a hub id available here (this machine may be "
        "offline); pass a folder written by save_pretrained."
    )


def model_location(model: Model) -> str:
    """Where to load `model` from; a registered folder that vanished is an error."""
    if os.path.isabs(model.path) and not Path(model.path).is_dir():
        raise UserError(
            f"The files of model {model.name!r} are gone from {model.path}; restore them or "
            "register the model again from where it now lives."
        )
    return model.path


def policy_to_train(workspace, spec: str | None) -> tuple[int, str, str]:
    """(id, name, location) of the policy a training run starts from: `spec`, else the
    current policy, else the workspace's default policy.

    Resolved by the main process only: resolving may register the policy or convert a
    built-in one, which several processes of one launch must not all do.
    """
    from db.engine import transaction
    from rlhf_train.distributed import from_main_process
    from rlhf_train.models.lora import is_adapter_folder

    def resolve() -> tuple[int, str, str]:
        with transaction(workspace.sessions) as session:
            wanted = spec
            if wanted is None:
                current = current_policy(session)
                wanted = current.name if current is not None else workspace.config.models.policy
            model = resolve_policy(session, wanted, workspace.models_dir)
            location = model_location(model)
            if is_adapter_folder(location):
                raise UserError(
                    f"The policy {model.name!r} is a LoRA adapter; merge it first with "
                    f"`rlhf models merge {model.name}` and train the merged model."
                )
            return model.id, model.name, location

    return from_main_process(resolve)


def lineage_start(workspace, policy_id: int) -> str:
    """The location of the first policy of `policy_id`'s lineage: the policy it was
    trained from, that one's parent, and so on up to one without a parent."""
    from rlhf_train.distributed import from_main_process

    def resolve() -> str:
        with workspace.sessions() as session:
            return model_location(lineage(session, session.get(Model, policy_id))[-1])

    return from_main_process(resolve)
