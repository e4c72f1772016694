"""`rlhf init`, `rlhf up`, `rlhf serve`: make a workspace ready and serve the app on it."""

from __future__ import annotations

import argparse

from rlhf_train.cli.common import Commands, add_command, open_workspace
from rlhf_train.config import setting_help


def cmd_init(args: argparse.Namespace) -> int:
    from db.engine import redact
    from rlhf_train.workspace_setup import init_workspace

    workspace = open_workspace(args)
    report = init_workspace(workspace)
    if report.revision_before == report.revision_after:
        state = f"already at schema revision {report.revision_after}"
    else:
        state = f"schema {report.revision_before or 'empty'} -> {report.revision_after}"
    print(f"Workspace {workspace.root} ready; database {redact(workspace.db_url)} {state}.")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from rlhf_train.loop.quickstart import quickstart
    from rlhf_train.loop.serve import serve

    workspace = open_workspace(args, {"serve.port": args.port})
    quickstart(workspace, progress=not args.no_progress)
    if args.no_serve:
        return 0
    return serve(
        workspace,
        workspace.config.serve.port,
        workspace.config.serve.address,
        with_worker=not args.no_worker,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from rlhf_train.loop.serve import serve

    workspace = open_workspace(args, {"serve.port": args.port, "serve.address": args.address})
    workspace.sessions  # noqa: B018 - fail here, not in the browser, if not initialized
    return serve(
        workspace,
        workspace.config.serve.port,
        workspace.config.serve.address,
        with_worker=not args.no_worker,
    )


def add_commands(commands: Commands) -> None:
    add_command(
        commands,
        "init",
        cmd_init,
        "Create the workspace, or upgrade its database to this version's schema (idempotent).",
        """
        rlhf init
        rlhf --workspace /data/project init
        RLHF_DB_URL=postgresql+psycopg://me:secret@db:5432/prefloop rlhf init
        """,
    )
    up = add_command(
        commands,
        "up",
        cmd_up,
        "Initialize, import the default prompts, generate round 1, create the first lead "
        "account, and serve the app. Each step is skipped when already done.",
        """
        rlhf up
        rlhf up --port 8600
        rlhf up --no-serve            # prepare everything, then exit
        """,
    )
    up.add_argument("--port", type=int, help=setting_help("serve.port"))
    up.add_argument("--no-serve", action="store_true", help="stop after preparing the round")
    up.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_no_worker(up)

    serve = add_command(
        commands,
        "serve",
        cmd_serve,
        "Serve the annotation app.",
        """
        rlhf serve
        rlhf serve --port 8600 --address 0.0.0.0
        """,
    )
    serve.add_argument("--port", type=int, help=setting_help("serve.port"))
    serve.add_argument("--address", help=setting_help("serve.address"))
    _add_no_worker(serve)


def _add_no_worker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker beside the app (run `rlhf worker` elsewhere)",
    )
