"""`rlhf export` and `rlhf import-preferences`: judgments out as a preference dataset, and
an existing preference dataset in as a judged round."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_train.cli.common import Commands, add_command, open_workspace
from rlhf_train.errors import UserError


def _round_numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--rounds {text!r} is not a list of round numbers; write e.g. 1,2."
        ) from None
    if not numbers:
        raise UserError("--rounds is empty; write e.g. --rounds 1,2 or use --all.")
    return numbers


def cmd_export(args: argparse.Namespace) -> int:
    from rlhf_train.export.preferences import FORMATS, ExportOptions, export_preferences
    from rlhf_train.export.summary import describe_export

    options = ExportOptions(
        out=Path(args.out),
        rounds=None if args.rounds is None else _round_numbers(args.rounds),
        formats=FORMATS if args.format == "all" else (args.format,),
        ties=args.ties,
        min_votes=args.min_votes,
        min_agreement=args.min_agreement,
        exclude_gold=args.exclude_gold,
        min_gold_accuracy=args.min_gold_accuracy,
        test_fraction=args.test_fraction,
        seed=args.seed,
        conversational=args.conversational,
        overwrite=args.overwrite,
    )
    result = export_preferences(open_workspace(args), options)
    print(describe_export(result))
    return 0


def cmd_import_preferences(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from rlhf_train.rounds.import_preferences import import_preferences, read_preference_rows

    workspace = open_workspace(args)
    rows = read_preference_rows(Path(args.path))
    with transaction(workspace.sessions) as session:
        report = import_preferences(session, rows, source=args.source or Path(args.path).name)
    print(report.summary())
    return 0


def add_commands(commands: Commands) -> None:
    export = add_command(
        commands,
        "export",
        cmd_export,
        "Aggregate the judgments of rounds into a preference dataset (prompt/chosen/rejected, "
        "TRL's format) with a train/test split by prompt, a dataset card and a manifest.",
        """
        rlhf export --out exports/r1
        rlhf export --out exports/r1-2 --rounds 1,2 --format all --min-votes 2 --ties half
        rlhf export --out exports/clean --all --min-agreement 0.67 --min-gold-accuracy 0.8 \\
            --exclude-gold --conversational --overwrite
        """,
    )
    export.add_argument("--out", required=True, help="the folder to create")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--rounds", help="comma-separated round numbers (default: all)")
    which.add_argument("--all", action="store_true", help="every round (the default)")
    export.add_argument(
        "--format",
        choices=["hf", "jsonl", "parquet", "all"],
        default="hf",
        help="hf (save_to_disk), jsonl, parquet or all (default hf)",
    )
    export.add_argument(
        "--ties",
        choices=["drop", "half"],
        default="drop",
        help="drop tied pairs, or keep them as two rows with margin 0 (default drop)",
    )
    export.add_argument("--min-votes", type=int, default=1, help="votes a pair needs (default 1)")
    export.add_argument(
        "--min-agreement", type=float, default=0.0, help="share of votes for the outcome (0-1)"
    )
    export.add_argument("--exclude-gold", action="store_true", help="leave gold pairs out")
    export.add_argument(
        "--min-gold-accuracy", type=float, help="leave out annotators below this gold accuracy"
    )
    export.add_argument(
        "--test-fraction", type=float, default=0.1, help="share of prompts in test (default 0.1)"
    )
    export.add_argument("--seed", type=int, default=0, help="seed of the prompt split")
    export.add_argument(
        "--conversational", action="store_true", help="message lists instead of plain text"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    import_ = add_command(
        commands,
        "import-preferences",
        cmd_import_preferences,
        "Store an existing preference dataset (a save_to_disk folder, .jsonl, .csv or .parquet "
        "with prompt/chosen/rejected) as a closed round judged by the annotator 'imported'.",
        """
        rlhf import-preferences old-preferences.jsonl
        rlhf import-preferences exports/r1/hf --source last-quarter
        """,
    )
    import_.add_argument("path")
    import_.add_argument("--source", help="label stored with the prompts (default: file name)")
