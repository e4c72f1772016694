"""What every `rlhf` subcommand module shares: declaring a command with its examples,
and opening the workspace the global --workspace option names."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from textwrap import dedent
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def examples(text: str) -> str:
    return "examples:\n" + dedent(text).strip("\n")


def add_command(
    group: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    summary: str,
    example_text: str,
) -> argparse.ArgumentParser:
    parser = group.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=examples(example_text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def open_workspace(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    from rlhf_train.workspace import Workspace, workspace_path

    return Workspace.open(workspace_path(args.workspace), overrides)


def finite_float(text: str) -> float:
    """argparse type for a float flag that is not a setting (settings are checked by
    rlhf_train.config): float() accepts inf and nan, which no such flag means."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give e.g. 0.5")
    return value
