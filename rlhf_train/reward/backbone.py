"""Which network a reward model starts from, and loading it with a scalar head.

Three kinds of backbone: the packaged MiniLM (the default, quick on a CPU), the current
policy (InstructGPT starts its reward model from the SFT policy), or any registered
model, local folder or hub id that has or can take a sequence-classification head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy.orm import Session
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from db.registry import current_policy, find_model
from rlhf_train.errors import UserError, first_line
from rlhf_train.models.builtin import BUILTIN_MODELS
from rlhf_train.models.loading import ensure_pad_token
from rlhf_train.models.lora import is_adapter_folder
from rlhf_train.models.source import check_model_spec, model_location

POLICY_BACKBONE = "policy"


@dataclass(frozen=True)
class Backbone:
    location: str  # folder or hub id
    description: str
    parent_id: int | None  # the registered model it starts from, if any


def _from_registered(name: str, location: str, model_id: int) -> Backbone:
    if is_adapter_folder(location):
        raise UserError(
            f"The model {name!r} is a LoRA adapter; merge it first with "
            f"`rlhf models merge {name}` and use the merged model as the backbone."
        )
    return Backbone(location, f"registered model {name}", model_id)


def resolve_backbone(session: Session, spec: str, models_cache: Path) -> Backbone:
    """The backbone named by `spec`: "policy", a built-in, a registered name, folder or hub id."""
    if spec == POLICY_BACKBONE:
        policy = current_policy(session)
        if policy is None:
            raise UserError(
                "There is no current policy to start the reward model from; run `rlhf up` or "
                "`rlhf models register` first, or pick another --backbone."
            )
        return _from_registered(policy.name, model_location(policy), policy.id)
    builtin = BUILTIN_MODELS.get(spec)
    if builtin is not None:
        return Backbone(str(builtin.materialize(models_cache)), f"built-in {spec}", None)
    registered = find_model(session, spec)
    if registered is not None:
        return _from_registered(registered.name, model_location(registered), registered.id)
    if not Path(spec).expanduser().exists() and "/" not in spec:
        raise UserError(
            f"No reward backbone {spec!r}: use 'policy', a built-in "
            f"({', '.join(BUILTIN_MODELS)}), a registered model, a folder or a hub id."
        )
    location = check_model_spec(spec)
    return Backbone(location, location, None)


def load_sequence_classifier(
    location: str,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model with a one-output head (added fresh if the checkpoint has none), and its
    tokenizer with a padding token."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # A backbone without a scalar head gets a fresh one; transformers' load report would
    # present that expected step as a warning table on every training run.
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForSequenceClassification.from_pretrained(
            location, num_labels=1, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Cannot load a sequence-classification model from {location} "
            f"({first_line(exc)}); pass a folder written by save_pretrained or a hub id "
            "available offline."
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    ensure_pad_token(tokenizer, location)
    tokenizer.padding_side = "right"
    # Decoder heads read the last token that is not padding; they need to know which is.
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
