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


# The flags that shape the preference dataset; their defaults live in ExportOptions, so
# that a flag given with --raw can be told from one left out.
PREFERENCE_ONLY = (
    "ties",
    "min_votes",
    "min_agreement",
    "exclude_gold",
    "min_gold_accuracy",
    "test_fraction",
    "seed",
)


def _given_preference_flags(args: argparse.Namespace) -> dict[str, object]:
    # `is not False`, not `not in (None, False)`: 0 == False, and --seed 0 was given.
    return {
        name: value
        for name in PREFERENCE_ONLY
        if (value := getattr(args, name)) is not None and value is not False
    }


def cmd_export(args: argparse.Namespace) -> int:
    from rlhf_train.export.preferences import ExportOptions, export_preferences
    from rlhf_train.export.publish import FORMATS
    from rlhf_train.export.summary import describe_export

    rounds = None if args.rounds is None else _round_numbers(args.rounds)
    formats = FORMATS if args.format == "all" else (args.format,)
    given = _given_preference_flags(args)
    if args.raw:
        return _export_raw(args, rounds, formats, given)
    options = ExportOptions(
        out=Path(args.out),
        rounds=rounds,
        formats=formats,
        conversational=args.conversational,
        overwrite=args.overwrite,
        **given,  # type: ignore[arg-type]
    )
    result = export_preferences(open_workspace(args), options)
    print(describe_export(result))
    return 0


def _export_raw(
    args: argparse.Namespace,
    rounds: list[int] | None,
    formats: tuple[str, ...],
    given: dict[str, object],
) -> int:
    from rlhf_train.export.raw import RawExportOptions, describe_raw_export, export_raw

    if given:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise UserError(
            f"{flag} shapes the preference dataset, but --raw exports every judgment as it "
            f"is; leave out {flag} or --raw."
        )
    options = RawExportOptions(
        out=Path(args.out),
        rounds=rounds,
        formats=formats,
        conversational=args.conversational,
        overwrite=args.overwrite,
    )
    print(describe_raw_export(export_raw(open_workspace(args), options)))
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
        rlhf export --out exports/votes --raw --format all
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
        help="drop tied pairs, or keep them as two rows with margin 0 (default drop)",
    )
    export.add_argument("--min-votes", type=int, help="votes a pair needs (default 1)")
    export.add_argument(
        "--min-agreement", type=float, help="share of votes for the outcome (0-1, default 0)"
    )
    export.add_argument("--exclude-gold", action="store_true", help="leave gold pairs out")
    export.add_argument(
        "--min-gold-accuracy", type=float, help="leave out annotators below this gold accuracy"
    )
    export.add_argument(
        "--test-fraction", type=float, help="share of prompts in test (default 0.1)"
    )
    export.add_argument("--seed", type=int, help="seed of the prompt split (default 0)")
    export.add_argument(
        "--conversational", action="store_true", help="message lists instead of plain text"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument(
        "--raw",
        action="store_true",
        help="one row per judgment (skips included), annotators as pseudonyms, instead of "
        "the preference dataset; takes --rounds/--all, --format, --conversational",
    )

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
