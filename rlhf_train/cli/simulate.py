"""`rlhf simulate`: the whole loop unattended, simulated annotators judging each round."""

from __future__ import annotations

import argparse
import signal

from rlhf_train.cli.common import Commands, add_command, finite_float, open_workspace, options_from
from rlhf_train.cli.rounds import add_next_round_flags, next_round_options


def cmd_simulate(args: argparse.Namespace) -> int:
    from rlhf_train.loop.simulate import TASK_FIGURES, SimulationOptions, simulate
    from rlhf_train.models.loading import configure_threads

    workspace = open_workspace(args, {"runtime.device": args.device})
    configure_threads(workspace.config.runtime.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    options = options_from(SimulationOptions, args, round_options=next_round_options(args))
    records = simulate(workspace, options)
    key, meaning = TASK_FIGURES[args.task]
    first, last = records[0].figure, records[-1].figure
    if first is not None and last is not None:
        print(f"{key} ({meaning}): {first:.3f} -> {last:.3f} over {args.rounds} rounds.")
    return 0


def add_commands(commands: Commands) -> None:
    simulate = add_command(
        commands,
        "simulate",
        cmd_simulate,
        "Run the loop unattended: simulated annotators judge each round through the app's "
        "database functions (overlap, gold, leases), preferring by a task oracle with "
        "Bradley-Terry noise, then `rounds next` retrains. Prints the oracle figure, reward, "
        "KL and diversity of the policy per round.",
        """
        rlhf simulate --task positive --annotators 3 --rounds 2 --labels-per-round 256
        rlhf simulate --task shorter --rounds 3 --labels-per-round 64 --noise 0.3
        rlhf simulate --task negative --position-bias 0.2 --pair-strategy uncertainty
        rlhf simulate --task positive --rank 4 --labels-per-round 64
        """,
    )
    simulate.add_argument("--task", required=True, choices=["positive", "negative", "shorter"])
    simulate.add_argument("--annotators", type=int, default=3, help="how many (default 3)")
    simulate.add_argument("--rounds", type=int, default=2, help="retrainings (default 2)")
    simulate.add_argument(
        "--labels-per-round", type=int, default=256, help="judgments per round (default 256)"
    )
    simulate.add_argument(
        "--noise",
        type=finite_float,
        default=0.1,
        help="Bradley-Terry temperature: P(A) = sigmoid((oracle(A) - oracle(B)) / noise); "
        "0 always follows the oracle (default 0.1)",
    )
    simulate.add_argument(
        "--position-bias",
        type=finite_float,
        default=0.0,
        help="chance that an annotator picks the left response unread (default 0)",
    )
    simulate.add_argument("--seed", type=int, default=0, help="the annotators' seed")
    simulate.add_argument(
        "--rank",
        type=int,
        default=0,
        metavar="K",
        help="ranking rounds: K (3 to 6) responses per prompt, ranked by Plackett-Luce at "
        "the --noise temperature (default 0: pairs)",
    )
    simulate.add_argument("--round", type=int, help=argparse.SUPPRESS)
    add_next_round_flags(simulate)
