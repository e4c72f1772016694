"""What every `rlhf` command module shares: declaring a group and a command with its
examples, opening the workspace the global --workspace option names, and the few flag
types and switches several groups take."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from textwrap import dedent
from typing import Any, TypeVar

from rlhf_train.config import setting_help

Handler = Callable[[argparse.Namespace], int]
Commands = argparse._SubParsersAction


def examples(text: str) -> str:
    return "examples:\n" + dedent(text).strip("\n")


def add_group(commands: Commands, name: str, summary: str, **kwargs: Any) -> Commands:
    """A noun with subcommands (`rlhf users add`); returns where its commands go."""
    group = commands.add_parser(name, help=summary, **kwargs)
    return group.add_subparsers(title="commands", metavar="COMMAND", required=True)


def add_command(
    group: Commands,
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


def quiet_if_asked(args: argparse.Namespace) -> None:
    """--no-progress silences the loading and dataset bars too, not only the Trainer's."""
    if getattr(args, "no_progress", False):
        from datasets import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        disable_progress_bars()


OptionsT = TypeVar("OptionsT")


def options_from(cls: type[OptionsT], args: argparse.Namespace, **given: Any) -> OptionsT:
    """The options dataclass `cls` filled from the flags of the same names; `given` holds
    the fields whose flag has another name or form. `progress` is `not --no-progress`, and
    a field without a flag keeps its default."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in given:
            values[field.name] = given[field.name]
        elif field.name == "progress" and hasattr(args, "no_progress"):
            values["progress"] = not args.no_progress
        elif hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    return cls(**values)


def add_optimizer_budget(parser: argparse.ArgumentParser, time_limit_help: str) -> None:
    """--max-steps and --time-limit, the optimizer's budget, for `train` and `rounds next`."""
    parser.add_argument("--max-steps", type=int, help=setting_help("optimize.steps"))
    parser.add_argument("--time-limit", type=finite_float, metavar="MINUTES", help=time_limit_help)
