"""Loading a policy for generation or training, with errors a user can act on.

A policy folder holds either a full model or a LoRA adapter (adapter_config.json naming
the base model it was trained on); both load the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf_train.errors import UserError, first_line
from rlhf_train.models.lora import is_adapter_folder


def configure_threads(threads: int) -> int:
    """Use `threads` CPU threads (0: the cores this process may run on); returns the count."""
    count = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count


def resolve_device(setting: str) -> str:
    """The torch device for a runtime.device setting ("auto" picks CUDA when present)."""
    if setting == "auto" and not torch.cuda.is_available():
        return "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"runtime.device is {setting!r} but torch sees no CUDA GPU here; set it to auto or cpu."
        )
    if setting in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
        # One GPU per process under torchrun / accelerate launch.
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return "cuda" if setting == "auto" else setting


def adapter_base(location: str) -> str | None:
    """The base model (folder or hub id) of the LoRA adapter in `location`; None for a
    full model. A base folder that is gone is an error, not a download attempt."""
    if not is_adapter_folder(location):
        return None
    config_file = Path(location) / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{config_file} is unreadable or names no base_model_name_or_path ({exc}); restore "
            "the adapter folder as peft saved it."
        ) from exc
    if not isinstance(base, str) or not base:
        raise UserError(f"{config_file} names no base model; restore it as peft saved it.")
    if os.path.isabs(base) and not Path(base).is_dir():
        raise UserError(
            f"The LoRA adapter in {location} was trained on {base}, which is gone; restore "
            "that folder, or merge the adapter while both exist (`rlhf models merge`)."
        )
    return base


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, location: str) -> None:
    """Batches need a padding token; a tokenizer without one pads with its end token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"The tokenizer in {location} has neither a pad nor an end-of-sequence token; "
                "set one of them in its tokenizer_config.json."
            )
        tokenizer.pad_token = tokenizer.eos_token


def load_policy(
    location: str, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode and its tokenizer, padded on the left for batched sampling.

    For a LoRA adapter folder, transformers (with peft installed) loads the base model
    named in adapter_config.json and puts the adapter on it.
    """
    base = adapter_base(location)
    # An adapter saved without its tokenizer uses its base model's.
    has_tokenizer = base is None or (Path(location) / "tokenizer_config.json").is_file()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location if has_tokenizer else base)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Cannot load a causal language model from {location} ({first_line(exc)}); pass a "
            "folder written by save_pretrained or a hub id that is available offline."
        ) from exc
    # Left padding keeps every prompt's last token at the end, where sampling starts.
    tokenizer.padding_side = "left"
    ensure_pad_token(tokenizer, location)
    model.to(device)
    model.eval()
    return model, tokenizer
