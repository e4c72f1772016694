"""Merging a LoRA adapter into its base model, giving an ordinary full policy.

An adapter is small and cheap to train, but it needs its base model at every load, and
a reward model, a LoRA run or an export cannot start from it. The merged model computes
the same function as base + adapter, with no peft needed to load it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from db.models import Model
from db.registry import current_policy, find_model
from rlhf_train.errors import UserError, first_line
from rlhf_train.models.loading import adapter_base
from rlhf_train.models.publish import NewModel, check_new_model, publish_model
from rlhf_train.models.source import model_location
from rlhf_train.workspace import Workspace


def _load_merged(location: str):
    """The adapter in `location` merged into its base model, and the adapter's tokenizer."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    base = adapter_base(location)
    has_tokenizer = (Path(location) / "tokenizer_config.json").is_file()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location if has_tokenizer else base)
        adapted = AutoPeftModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Cannot load the LoRA adapter in {location} on its base {base} ({first_line(exc)}); "
            "restore the adapter folder and its base model."
        ) from exc
    return adapted.merge_and_unload(), tokenizer


def merge_lora(workspace: Workspace, name: str, new_name: str | None = None) -> Model:
    """Register the merge of the LoRA adapter policy `name` as `new_name` (default
    NAME-merged), a child of the adapter; it is promoted if the adapter was current."""
    with workspace.sessions() as session:
        adapter = find_model(session, name)
        if adapter is None or adapter.kind != "policy":
            raise UserError(
                f"There is no registered policy {name!r}; `rlhf models list` shows the policies."
            )
        location = model_location(adapter)
        if adapter_base(location) is None:
            raise UserError(
                f"The policy {name!r} is a full model, not a LoRA adapter; there is nothing to "
                "merge."
            )
        current = current_policy(session)
        was_current = current is not None and current.id == adapter.id
        adapter_id, adapter_metrics = adapter.id, dict(adapter.metrics or {})
    target_name = new_name or f"{name}-merged"
    check_new_model(workspace, target_name)
    merged, tokenizer = _load_merged(location)

    def write(staging: Path) -> None:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    # Merging changes no output, so the adapter's evaluation describes the merged model too.
    new = NewModel(
        name=target_name,
        kind="policy",
        metrics=adapter_metrics,
        config={"merged_from": name},
        parent_id=adapter_id,
        promote=was_current,
    )
    return publish_model(workspace, new, write)
