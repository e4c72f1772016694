"""`rlhf worker` and `rlhf runs list|show|cancel|retry|execute`: queued training runs,
the process that runs them, and what a lead does with a run."""

from __future__ import annotations

import argparse
import signal

from rlhf_train.cli.common import Commands, add_command, add_group, open_workspace


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


def cmd_runs_step(args: argparse.Namespace) -> int:
    """What each rank of a launched step runs (`[worker] launcher`): one step of a job."""
    from rlhf_train.loop.launched import die_with_parent
    from rlhf_train.loop.round_next import run_step
    from rlhf_train.models.loading import configure_threads

    # A rank whose launcher is gone has nobody to report to: it ends at once.
    die_with_parent(signal.SIGKILL)
    workspace = open_workspace(args)
    configure_threads(workspace.config.runtime.threads)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run_step(workspace, args.run, args.step)
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
        print("No training runs yet; start one with `rlhf train` or `rlhf rounds next`.")
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


def add_commands(commands: Commands) -> None:
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

    runs_commands = add_group(commands, "runs", "Inspect, cancel and retry training runs.")
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
    step = add_command(
        runs_commands,
        "step",
        cmd_runs_step,
        "Run one step of a claimed retraining job in this rank (what a job starts under "
        "[worker] launcher, once per process).",
        "accelerate launch --multi_gpu --num_processes 2 -m rlhf_train.cli runs step 7 optimize",
    )
    step.add_argument("run", type=int)
    step.add_argument("step", choices=["reward", "optimize", "evaluate", "generate"])
