"""What scores a policy's responses during optimization: a reward model (through
RewardScorer) or a Python function the team writes, named "module:function" or
"path/to/file.py:function" and called as `function(prompts, responses) -> list[float]`."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import select

from db.models import Model
from db.registry import find_model
from rlhf_train.errors import UserError
from rlhf_train.models.source import check_model_spec, model_location
from rlhf_train.workspace import Workspace

RewardFunction = Callable[[list[str], list[str]], list[float]]


@dataclass(frozen=True)
class RewardSource:
    description: str
    model_id: int | None  # the registered reward model, if it is one
    location: str | None  # its folder or hub id
    function: RewardFunction | None  # or a Python reward function


def _function(spec: str) -> RewardFunction:
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or not path.is_file():
                raise ImportError(f"no file {path}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise UserError(
            f"Cannot import the reward function module {target!r} ({exc}); pass "
            "module:function or path/to/file.py:function."
        ) from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"{target} has no function {name!r}; check the name after the colon.")
    return function


def resolve_reward(workspace: Workspace, spec: str | None) -> RewardSource:
    """A reward model (registered name or folder; None: the newest reward model) or a
    Python function ("module:function", "file.py:function")."""
    if spec is not None and ":" in spec and not Path(spec).exists():
        return RewardSource(f"function {spec}", None, None, _function(spec))
    with workspace.sessions() as session:
        if spec is None:
            model = session.scalar(
                select(Model).where(Model.kind == "reward").order_by(Model.id.desc()).limit(1)
            )
            if model is None:
                raise UserError(
                    "There is no reward model yet; train one with `rlhf train reward`, or pass "
                    "--reward with a folder or a Python function."
                )
        else:
            model = find_model(session, spec)
        if model is not None:
            if model.kind != "reward":
                raise UserError(f"{spec!r} is a {model.kind} model, not a reward model.")
            return RewardSource(f"reward model {model.name}", model.id, model_location(model), None)
    assert spec is not None
    if not Path(spec).expanduser().exists():
        raise UserError(
            f"No reward model {spec!r}: it is not registered (`rlhf models list`), not a "
            "folder and not a module:function."
        )
    return RewardSource(spec, None, check_model_spec(spec), None)


def score_function(source: RewardSource, device: str, batch_size: int = 32):
    """(prompts, responses) -> float tensor, from a reward model or a Python function."""
    if source.function is not None:
        function = source.function

        def call(prompts: list[str], responses: list[str]) -> torch.Tensor:
            values = function(list(prompts), list(responses))
            if len(values) != len(responses):
                raise UserError(
                    f"The reward function returned {len(values)} values for {len(responses)} "
                    "responses; return one float per response."
                )
            return torch.tensor([float(v) for v in values], dtype=torch.float32)

        return call
    from rlhf_train.reward.scorer import RewardScorer

    scorer = RewardScorer.load(source.location, device, batch_size)

    def score(prompts: list[str], responses: list[str]) -> torch.Tensor:
        return torch.from_numpy(scorer.score(prompts, responses))

    return score
