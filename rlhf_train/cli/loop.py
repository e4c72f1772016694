"""The loop's commands of `rlhf`: round next, worker, and runs list|show|cancel|retry|execute."""

from __future__ import annotations

import argparse
import signal

from rlhf_train.cli.common import add_command, finite_float, open_workspace


def _options(args: argparse.Namespace):
    from rlhf_train.loop.round_next import NextRoundOptions

    return NextRoundOptions(
        optimizer=args.optimizer,
        round_number=args.round,
        cumulative=args.cumulative,
        pair_strategy=args.pair_strategy,
        lora=args.lora,
        reward_max_steps=args.reward_max_steps,
        optimize_max_steps=args.max_steps,
        optimize_time_limit=args.time_limit,
        next_prompts=args.next_prompts,
        notes=args.notes or "",
        progress=not args.no_progress,
    )


def cmd_round_next(args: argparse.Namespace) -> int:
    from rlhf_train.loop.round_next import queue_next_round

    workspace = open_workspace(args, {"runtime.device": args.device})
    job_id = queue_next_round(workspace, _options(args))
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


def cmd_runs_execute(args: argparse.Namespace) -> int:
    """What a worker's child process runs: one claimed job, to its end."""
    from rlhf_train.loop.round_next import describe_outcome, run_job
    from rlhf_train.models.loading import configure_threads

    workspace = open_workspace(args)
    configure_threads(workspace.config.runtime.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    outcome = run_job(workspace, args.run)
    print(describe_outcome(outcome))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from rlhf_train.loop.worker import ParentGone, run_worker

    try:
        report = run_worker(
            open_workspace(args),
            once=args.once,
            max_runs=args.max_runs,
            parent_pid=args.parent_pid,
        )
    except ParentGone:
        print("The app that started this worker stopped; so does the worker.", flush=True)
        return 0
    print(
        f"Worker done: {report.runs} runs ({report.succeeded} succeeded, {report.failed} failed, "
        f"{report.cancelled} cancelled)."
    )
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.runs import request_cancel

    with transaction(open_workspace(args).sessions) as session:
        run = request_cancel(session, args.run)
        status = run.status
    if status == "cancelled":
        print(f"Run {args.run} was queued and is now cancelled.")
    else:
        print(f"Asked the worker holding run {args.run} to stop it; it is marked when it stops.")
    return 0


def cmd_runs_retry(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.runs import retry_run

    with transaction(open_workspace(args).sessions) as session:
        retry_run(session, args.run)
    print(f"Run {args.run} is queued again; the worker resumes it from its last checkpoint.")
    return 0


def cmd_runs_list(args: argparse.Namespace) -> int:
    from db.runs import list_runs

    with open_workspace(args).sessions() as session:
        runs = list_runs(session, limit=args.limit)
    if not runs:
        print("No training runs yet; start one with `rlhf train` or `rlhf round next`.")
    for run in runs:
        started = run.started_at.strftime("%Y-%m-%d %H:%M") if run.started_at else "-"
        part_of = f"  (step of run {run.parent_id})" if run.parent_id else ""
        error = (run.metrics or {}).get("error", "")
        print(
            f"{run.id:>5}  {run.kind:<7} {run.status:<10} {run.progress:>5.0%}  "
            f"started {started}{part_of}  {error}"
        )
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    from rlhf_train.runs.summary import describe_run

    print(describe_run(open_workspace(args), args.run, log_lines=args.log_lines))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from rlhf_train.loop.simulate import TASK_FIGURES, SimulationOptions, simulate
    from rlhf_train.models.loading import configure_threads

    workspace = open_workspace(args, {"runtime.device": args.device})
    configure_threads(workspace.config.runtime.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    options = SimulationOptions(
        task=args.task,
        annotators=args.annotators,
        rounds=args.rounds,
        labels_per_round=args.labels_per_round,
        noise=args.noise,
        position_bias=args.position_bias,
        seed=args.seed,
        round_options=_options(args),
        progress=not args.no_progress,
    )
    records = simulate(workspace, options)
    key, meaning = TASK_FIGURES[args.task]
    first, last = records[0].figure, records[-1].figure
    if first is not None and last is not None:
        print(f"{key} ({meaning}): {first:.3f} -> {last:.3f} over {args.rounds} rounds.")
    return 0


def _add_round_flags(parser: argparse.ArgumentParser) -> None:
    """What a lead may choose per retraining, for round next and simulate alike."""
    parser.add_argument("--optimizer", choices=["ppo", "dpo", "rloo", "grpo"])
    parser.add_argument(
        "--cumulative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export every round up to it, or only it (default: loop.cumulative)",
    )
    parser.add_argument(
        "--pair-strategy",
        choices=["random", "uncertainty"],
        help="how the next round's new-vs-new pairs are chosen (generation.pair_strategy)",
    )
    parser.add_argument("--lora", action="store_true", help="optimize a LoRA adapter ([lora])")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (optimize.steps)")
    parser.add_argument(
        "--time-limit",
        type=finite_float,
        metavar="MINUTES",
        help="stop the optimizer after the step that passes this budget, keeping its result",
    )
    parser.add_argument("--reward-max-steps", type=int, help="reward model training steps")
    parser.add_argument("--next-prompts", type=int, help="prompts in the next round")
    parser.add_argument("--notes", help="a note kept with the run")
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_loop_commands(commands: argparse._SubParsersAction) -> None:
    round_ = commands.add_parser("round", help="Retrain from a round and open the next one.")
    round_commands = round_.add_subparsers(title="commands", metavar="COMMAND", required=True)
    next_ = add_command(
        round_commands,
        "next",
        cmd_round_next,
        "Close the newest round, export its judgments, train the reward model, optimize the "
        "policy, evaluate it, promote it if all of that succeeded, and generate the next round.",
        """
        rlhf round next                          # here and now, with PPO
        rlhf round next --optimizer dpo --queue  # for `rlhf worker`
        rlhf round next --pair-strategy uncertainty --max-steps 50
        """,
    )
    next_.add_argument("--round", type=int, help="the round to learn from (default: the newest)")
    next_.add_argument(
        "--queue", action="store_true", help="queue it for `rlhf worker` instead of running it"
    )
    _add_round_flags(next_)

    simulate = add_command(
        commands,
        "simulate",
        cmd_simulate,
        "Run the loop unattended: simulated annotators judge each round through the app's "
        "database functions (overlap, gold, leases), preferring by a task oracle with "
        "Bradley-Terry noise, then `round next` retrains. Prints the oracle figure, reward, "
        "KL and diversity of the policy per round.",
        """
        rlhf simulate --task positive --annotators 3 --rounds 2 --labels-per-round 256
        rlhf simulate --task shorter --rounds 3 --labels-per-round 64 --noise 0.3
        rlhf simulate --task negative --position-bias 0.2 --pair-strategy uncertainty
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
    simulate.add_argument("--round", type=int, help=argparse.SUPPRESS)
    _add_round_flags(simulate)

    worker = add_command(
        commands,
        "worker",
        cmd_worker,
        "Run queued retraining jobs one at a time, each in its own process; mark runs whose "
        "worker died as failed. Several workers may share a database.",
        """
        rlhf worker
        rlhf worker --once            # run what is queued, then exit
        """,
    )
    worker.add_argument("--once", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--max-runs", type=int, help="exit after this many runs")
    # `rlhf serve` starts a worker that ends with it.
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    runs = commands.add_parser("runs", help="Inspect, cancel and retry training runs.")
    runs_commands = runs.add_subparsers(title="commands", metavar="COMMAND", required=True)
    runs_list = add_command(
        runs_commands, "list", cmd_runs_list, "List training runs, newest first.", "rlhf runs list"
    )
    runs_list.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    show = add_command(
        runs_commands,
        "show",
        cmd_runs_show,
        "Show a run: its steps and their outputs, its step runs, metrics and log tail.",
        "rlhf runs show 7",
    )
    show.add_argument("run", type=int)
    show.add_argument("--log-lines", type=int, default=20, help="lines of its log (default 20)")
    cancel = add_command(
        runs_commands,
        "cancel",
        cmd_runs_cancel,
        "Cancel a queued run, or ask the worker holding a running one to stop it.",
        "rlhf runs cancel 7",
    )
    cancel.add_argument("run", type=int)
    retry = add_command(
        runs_commands,
        "retry",
        cmd_runs_retry,
        "Queue a failed or cancelled retraining run again; it resumes where it stopped.",
        "rlhf runs retry 7",
    )
    retry.add_argument("run", type=int)
    execute = add_command(
        runs_commands,
        "execute",
        cmd_runs_execute,
        "Run one claimed retraining job in this process (what a worker's child runs).",
        "rlhf runs execute 7",
    )
    execute.add_argument("run", type=int)
