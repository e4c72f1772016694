"""The `rlhf` command line. Each module of this package is one command group, holding its
parsers and its handlers; this one only puts them together and runs the chosen handler.
Each handler parses, calls one plain function, prints."""

from __future__ import annotations

import argparse
import os
import sys

from rlhf_train.cli import (
    evaluate,
    export,
    leaderboard,
    models,
    prompts,
    rounds,
    runs,
    simulate,
    train,
    users,
    workspace,
)
from rlhf_train.cli.common import examples
from rlhf_train.distributed import leave_process_group
from rlhf_train.errors import UserError

# Before transformers is imported anywhere: this tool never reaches a model hub at run
# time unless the user opts in by setting HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# In the loop's order, which is the order `rlhf --help` lists them in.
GROUPS = (
    workspace,
    users,
    prompts,
    models,
    rounds,
    export,
    train,
    evaluate,
    leaderboard,
    simulate,
    runs,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description=(
            "prefloop: collect human preferences on your model and turn them into a "
            "better model, round after round."
        ),
        epilog=examples(
            """
            rlhf up                      # set up a workspace with round 1 and serve the app
            rlhf init                    # create or upgrade the workspace database
            rlhf generate --round 2 --policy smollm2-135m-instruct --n-prompts 64
            rlhf rounds show 1
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workspace",
        help="workspace folder (default: $RLHF_WORKSPACE or ./rlhf-workspace)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
