"""The one hash split: which prompts are held out, as a function of the prompt alone.

Deciding per prompt (not by shuffling the whole set) keeps a held-out prompt held out
when later rounds add data, and no prompt can land on both sides. Two splits use it, each
with its own salt so that they are independent of each other:

- the workspace's eval split (`split_by_hash`, salt "prompts"), decided when a prompt is
  stored: eval prompts measure policies and are never trained on;
- an export's test split (`is_test_prompt`, salted with the export's seed), decided
  among the prompts that rounds were made of.

With one salt for both, an export of train-split prompts at the same fraction would get
an empty test split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

_SCALE = float(2**64)
PROMPT_SPLIT_SALT = "prompts"


def hash_share(content_hash: str, salt: str) -> float:
    """A prompt's place in [0, 1), uniform over prompts and stable for a salt."""
    digest = hashlib.sha256(f"{salt}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_test_prompt(content_hash: str, test_fraction: float, seed: int) -> bool:
    """Whether an export with this seed puts the prompt in its test split."""
    return hash_share(content_hash, str(seed)) < test_fraction


def split_by_hash(eval_fraction: float) -> Callable[[str], str]:
    """A function from a prompt's content hash to its workspace split, "eval" or "train"."""

    def split_of(content_hash: str) -> str:
        held_out = hash_share(content_hash, PROMPT_SPLIT_SALT) < eval_fraction
        return "eval" if held_out else "train"

    return split_of
