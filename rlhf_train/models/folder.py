"""Writing a trained model into the workspace's models folder, all or nothing.

The files go to a hidden staging folder beside the target and are renamed into place
when complete, so a crash or a full disk never leaves a folder that looks like a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_train.atomic import write_folder
from rlhf_train.errors import UserError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_model_name(name: str) -> str:
    # fullmatch: with match, '$' also matches before a final newline.
    if not _NAME.fullmatch(name):
        raise UserError(
            f"{name!r} cannot name a model; use up to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def publish_folder(target: Path, write: Callable[[Path], None], metrics: dict[str, Any]) -> Path:
    """Call `write(staging)`, add metrics.json, then rename staging to `target`."""
    if target.exists():
        raise UserError(f"{target} already exists; choose another --name or remove the folder.")

    def write_with_metrics(staging: Path) -> None:
        write(staging)
        (staging / "metrics.json").write_text(
            json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    return write_folder(target, write_with_metrics, replace=False)
