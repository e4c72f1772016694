"""`rlhf generate` and `rlhf rounds list|show|next`: a round is sampled from a policy,
judged in the app, inspected, and retrained from to open the next one."""

from __future__ import annotations

import argparse
import signal

from rlhf_train.cli.common import (
    Commands,
    add_command,
    add_group,
    add_optimizer_budget,
    open_workspace,
    options_from,
)
from rlhf_train.config import setting_help
from rlhf_train.errors import UserError


def cmd_generate(args: argparse.Namespace) -> int:
    from rlhf_train.models.loading import configure_threads
    from rlhf_train.rounds.generate import generate_round, request_from_config

    workspace = open_workspace(
        args,
        {
            "generation.n_prompts": args.n_prompts,
            "generation.samples_per_prompt": args.samples_per_prompt,
            "generation.batch_size": args.batch_size,
            "generation.max_new_tokens": args.max_new_tokens,
            "generation.temperature": args.temperature,
            "generation.top_p": args.top_p,
            "generation.seed": args.seed,
            "generation.previous_fraction": args.previous_fraction,
            "generation.pair_strategy": args.pair_strategy,
            "round.render": args.render,
            "round.rank": args.rank,
            "runtime.device": args.device,
        },
    )
    configure_threads(workspace.config.runtime.threads)
    if args.arena is not None:
        report = _generate_arena(workspace, args)
    else:
        if args.adaptive:
            raise UserError("--adaptive weighs the pairs of an arena round; pass --arena too.")
        request = request_from_config(
            workspace, args.round, args.policy, args.previous_policy, args.reward
        )
        report = generate_round(workspace, request, progress=not args.no_progress)
    print(report.summary())
    if args.render is not None:
        print(_apply_render(workspace, args.round, args.render))
    return 0


def _apply_render(workspace, number: int, render: str) -> str:
    """An explicit --render holds for a resumed round too (a new one was created with
    it); applied after generating, so a refused generation changes nothing."""
    from db.engine import transaction
    from db.round_admin import set_render

    with transaction(workspace.sessions) as session:
        set_render(session, number, render)
    return f"Round {number} shows its responses as {render} in the app."


def _generate_arena(workspace, args: argparse.Namespace):
    from rlhf_train.rounds.arena import arena_request, generate_arena_round
    from rlhf_train.rounds.arena_start import parse_policies
    from rlhf_train.rounds.generate import request_from_config

    clashing = [
        flag
        for flag, value in (
            ("--policy", args.policy),
            ("--previous-policy", args.previous_policy),
            ("--pair-strategy", args.pair_strategy),
            ("--reward", args.reward),
            ("--rank", args.rank),
        )
        if value is not None
    ]
    if clashing:
        raise UserError(
            f"--arena names the round's policies and pairs them itself, so {clashing[0]} does "
            "not apply; leave it out."
        )
    policies = parse_policies(args.arena)
    base = request_from_config(workspace, args.round, policies[0], None)
    request = arena_request(base, policies, args.adaptive)
    return generate_arena_round(workspace, request, progress=not args.no_progress)


def cmd_rounds_list(args: argparse.Namespace) -> int:
    from db.rounds import round_summaries

    with open_workspace(args).sessions() as session:
        summaries = round_summaries(session)
    if not summaries:
        print("No rounds yet; create one with `rlhf generate --round 1`.")
        return 0
    print(f"{'round':>5}  {'status':<7} {'pairs':>6} {'judged':>14}  policy")
    for s in summaries:
        judged = f"{s.judgments}/{s.judgments_needed}"
        versus = f" vs {s.previous_policy}" if s.previous_policy else ""
        ranked = f" (ranking, K={s.rank_k})" if s.kind == "ranking" else ""
        print(f"{s.number:>5}  {s.status:<7} {s.pairs:>6} {judged:>14}  {s.policy}{versus}{ranked}")
    return 0


def cmd_rounds_show(args: argparse.Namespace) -> int:
    from rlhf_train.rounds.report import describe_round

    with open_workspace(args).sessions() as session:
        print(describe_round(session, args.number))
    return 0


def next_round_options(args: argparse.Namespace):
    """The flags of add_next_round_flags as the loop's options (rounds next and simulate)."""
    from rlhf_train.loop.round_next import NextRoundOptions

    return options_from(
        NextRoundOptions,
        args,
        round_number=args.round,
        optimize_max_steps=args.max_steps,
        optimize_time_limit=args.time_limit,
        notes=args.notes or "",
    )


def cmd_rounds_next(args: argparse.Namespace) -> int:
    from rlhf_train.loop.round_next import queue_next_round

    workspace = open_workspace(args, {"runtime.device": args.device})
    job_id = queue_next_round(workspace, next_round_options(args))
    if args.queue:
        print(f"Queued retraining run {job_id}; `rlhf worker` runs it (see `rlhf runs show`).")
        return 0
    return _run_here(workspace, job_id)


def _run_here(workspace, job_id: int) -> int:
    from rlhf_train.loop.round_next import describe_outcome, run_here
    from rlhf_train.models.loading import configure_threads

    configure_threads(workspace.config.runtime.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(describe_outcome(run_here(workspace, job_id)))
    return 0


def add_next_round_flags(parser: argparse.ArgumentParser) -> None:
    """What a lead may choose per retraining, for rounds next and simulate alike."""
    parser.add_argument("--optimizer", choices=["ppo", "dpo", "rloo", "grpo"])
    parser.add_argument(
        "--cumulative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=setting_help("loop.cumulative"),
    )
    parser.add_argument(
        "--pair-strategy",
        choices=["random", "uncertainty"],
        help="for the next round: " + setting_help("generation.pair_strategy"),
    )
    parser.add_argument("--lora", action="store_true", help="optimize a LoRA adapter ([lora])")
    add_optimizer_budget(
        parser, "stop the optimizer after the step that passes this budget, keeping its result"
    )
    parser.add_argument("--reward-max-steps", type=int, help="reward model training steps")
    parser.add_argument("--next-prompts", type=int, help=setting_help("loop.next_prompts"))
    parser.add_argument("--notes", help="a note kept with the run")
    parser.add_argument("--device", help=setting_help("runtime.device"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_commands(commands: Commands) -> None:
    _add_generate(commands)
    # `round` is the group's old name, kept as an alias: scripts and the docs of earlier
    # versions run `rlhf round next`.
    rounds = add_group(
        commands,
        "rounds",
        "Inspect rounds, and retrain from one to open the next.",
        aliases=["round"],
    )
    add_command(
        rounds, "list", cmd_rounds_list, "List rounds with status and progress.", "rlhf rounds list"
    )
    show = add_command(
        rounds,
        "show",
        cmd_rounds_show,
        "Show one round: policies, pairs by strategy, sample lengths, example pairs.",
        "rlhf rounds show 1",
    )
    show.add_argument("number", type=int)
    next_ = add_command(
        rounds,
        "next",
        cmd_rounds_next,
        "Close the newest round, export its judgments, train the reward model, optimize the "
        "policy, evaluate it, promote it if all of that succeeded, and generate the next round.",
        """
        rlhf rounds next                          # here and now, with PPO
        rlhf rounds next --optimizer dpo --queue  # for `rlhf worker`
        rlhf rounds next --pair-strategy uncertainty --max-steps 50
        """,
    )
    next_.add_argument("--round", type=int, help="the round to learn from (default: the newest)")
    next_.add_argument(
        "--queue", action="store_true", help="queue it for `rlhf worker` instead of running it"
    )
    add_next_round_flags(next_)


def _add_generate(commands: Commands) -> None:
    generate = add_command(
        commands,
        "generate",
        cmd_generate,
        "Sample responses from a policy and form the pairs of a round. Work is committed "
        "prompt by prompt; rerunning the same command resumes an interrupted run.",
        """
        rlhf generate --round 1 --policy smollm2-135m-instruct --n-prompts 64 --samples-per-prompt 2
        rlhf generate --round 2 --policy policy-r1 --previous-policy smollm2-135m-instruct
        rlhf generate --round 3 --policy ./my-model-folder --temperature 0.7 --top-p 0.95
        rlhf generate --round 4 --samples-per-prompt 8 --pair-strategy uncertainty --reward rm-r3
        rlhf generate --round 5 --arena policy-r4,policy-r3,smollm2-135m-instruct --n-prompts 90
        rlhf generate --round 6 --arena policy-r4,policy-r3,smollm2-135m-instruct --adaptive
        rlhf generate --round 7 --render markdown   # annotators see rendered Markdown
        rlhf generate --round 8 --rank 4            # annotators rank 4 responses per prompt
        """,
    )
    generate.add_argument("--round", type=int, required=True, help="round number (created if new)")
    generate.add_argument(
        "--policy",
        help="registered name, built-in name, folder or hub id (default: current policy)",
    )
    generate.add_argument(
        "--previous-policy", help="also sample this policy and pair it against --policy"
    )
    generate.add_argument("--n-prompts", type=int, help=setting_help("generation.n_prompts"))
    for flag, kind in (
        ("--samples-per-prompt", int),
        ("--previous-fraction", float),
        ("--batch-size", int),
        ("--max-new-tokens", int),
        ("--temperature", float),
        ("--top-p", float),
        ("--seed", int),
    ):
        key = "generation." + flag.removeprefix("--").replace("-", "_")
        generate.add_argument(flag, type=kind, help=setting_help(key))
    generate.add_argument(
        "--pair-strategy",
        choices=["random", "uncertainty"],
        help=setting_help("generation.pair_strategy"),
    )
    generate.add_argument(
        "--reward",
        help="reward model for --pair-strategy uncertainty: registered name, folder or "
        "module:function (default: the newest reward model)",
    )
    generate.add_argument(
        "--arena",
        metavar="P1,P2,...",
        help="an arena round: each prompt answered by two of these policies (names as for "
        "--policy), every pair of them compared equally often",
    )
    generate.add_argument(
        "--adaptive",
        action="store_true",
        help="with --arena: more prompts for the pairs whose rating intervals overlap most",
    )
    generate.add_argument(
        "--render", choices=["text", "markdown"], help=setting_help("round.render")
    )
    generate.add_argument("--rank", type=int, metavar="K", help=setting_help("round.rank"))
    generate.add_argument("--device", help=setting_help("runtime.device"))
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
