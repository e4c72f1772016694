"""Which prompts are test prompts: a function of the prompt and the seed alone.

Deciding per prompt (not by shuffling the whole set) keeps a test prompt a test prompt
when later rounds add data, and no prompt can land in both splits.
"""

from __future__ import annotations

import hashlib

_SCALE = float(2**64)


def is_test_prompt(content_hash: str, test_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE < test_fraction
