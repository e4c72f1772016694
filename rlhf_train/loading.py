"""Loading a policy for generation or training, with errors a user can act on."""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf_train.errors import UserError


def configure_threads(threads: int) -> int:
    """Use `threads` CPU threads (0: the cores this process may run on); returns the count."""
    count = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count


def resolve_device(setting: str) -> str:
    """The torch device for a runtime.device setting ("auto" picks CUDA when present)."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"runtime.device is {setting!r} but torch sees no CUDA GPU here; set it to auto or cpu."
        )
    return setting


def load_policy(
    location: str, device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode and its tokenizer, padded on the left for batched sampling."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"Cannot load a causal language model from {location} ({first_line}); pass a folder "
            "written by save_pretrained or a hub id that is available offline."
        ) from exc
    # Left padding keeps every prompt's last token at the end, where sampling starts.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"The tokenizer in {location} has neither a pad nor an end-of-sequence token; "
                "set one of them in its tokenizer_config.json."
            )
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer
