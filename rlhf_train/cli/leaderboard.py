"""`rlhf leaderboard`: Bradley–Terry ratings of the policies from the annotators' votes,
with 95% bootstrap intervals (rlhf_train.judgments.ratings)."""

from __future__ import annotations

import argparse
import json

from rlhf_train.cli.common import Commands, add_command, open_workspace
from rlhf_train.errors import UserError

MIN_RESAMPLES = 100


def round_numbers(text: str) -> list[int]:
    """--rounds: comma-separated round numbers."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--rounds {text!r} is not a list of round numbers; write e.g. --rounds 1,2."
        ) from None
    if not numbers:
        raise UserError("--rounds is empty; write e.g. --rounds 1,2, or leave it out for all.")
    return numbers


def _interval(low: float, high: float) -> str:
    return f"[{low:.0f}, {high:.0f}]"


def table_lines(board) -> list[str]:
    """The leaderboard as terminal text: a table, then what could not be rated."""
    from rlhf_train.judgments.ratings import leaderboard_rows

    rows = leaderboard_rows(board)
    header = ("rank", "policy", "rating", "95% interval", "votes", "P(beats next)")
    cells = [
        (
            str(row["rank"]),
            row["policy"],
            f"{row['rating']:.0f}",
            _interval(row["low"], row["high"]),
            str(row["votes"]),
            "" if row["beats_next"] is None else f"{row['beats_next']:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in [header, *cells]
    ]
    kind = "length-controlled" if board.style_control else "plain"
    lines.append(
        f"{kind} Bradley-Terry ratings from {board.n_votes} votes, {board.anchor} anchored at "
        f"1000 (400 points = 10:1 odds), {board.resamples} bootstrap resamples over prompts."
    )
    if board.length_coefficient is not None:
        lines.append(
            f"Length effect: {board.length_coefficient:+.2f} logits per unit of "
            "(words A - words B) / (words A + words B)."
        )
    if board.unplaced:
        lines.append(
            "Not connected to the anchor by any comparison, so not rated: "
            + ", ".join(board.unplaced)
        )
    if board.never_compared:
        pairs = ", ".join(f"{a} vs {b}" for a, b in board.never_compared)
        lines.append(f"Never compared: {pairs}")
    return lines


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from rlhf_train.judgments.ratings import fit_leaderboard, leaderboard_json
    from rlhf_train.judgments.votes import cross_policy_votes

    if args.resamples < MIN_RESAMPLES:
        raise UserError(
            f"--resamples {args.resamples} is too few for a 95% interval; use at least "
            f"{MIN_RESAMPLES} (the default is 1000)."
        )
    with open_workspace(args).sessions() as session:
        rounds = None if args.rounds is None else round_numbers(args.rounds)
        votes = cross_policy_votes(session, rounds, weigh_by_gold=args.weigh_by_gold)
    board = fit_leaderboard(
        votes,
        anchor=args.anchor,
        style_control=args.style_control,
        resamples=args.resamples,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(leaderboard_json(board), indent=2))
    else:
        print("\n".join(table_lines(board)))
    return 0


def add_commands(commands: Commands) -> None:
    parser = add_command(
        commands,
        "leaderboard",
        cmd_leaderboard,
        "Rate the policies from the annotators' cross-policy votes (Bradley-Terry, Elo "
        "scale, the starting policy at 1000) with 95%% bootstrap intervals.",
        """
        rlhf leaderboard
        rlhf leaderboard --rounds 2,3 --style-control
        rlhf leaderboard --json --resamples 2000 --seed 1 > leaderboard.json
        """,
    )
    parser.add_argument(
        "--rounds",
        metavar="N,M",
        help="comma-separated round numbers whose votes count (default: all)",
    )
    parser.add_argument(
        "--style-control",
        action="store_true",
        help="control for response length: ratings at equal length, and the length effect",
    )
    parser.add_argument(
        "--anchor",
        metavar="POLICY",
        help="the policy rated 1000 (default: the starting policy, the root of the current "
        "policy's lineage among the compared ones)",
    )
    parser.add_argument(
        "--weigh-by-gold",
        action="store_true",
        help="weigh each vote by its annotator's accuracy on gold pairs",
    )
    parser.add_argument(
        "--resamples",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples over prompts for the intervals (default 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the resamples (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the ratings as JSON")
