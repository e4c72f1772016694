"""The `rlhf` command line. Each handler parses, calls one plain function, prints."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from rlhf_train.cli.common import add_command as _add_command
from rlhf_train.cli.common import examples as _examples
from rlhf_train.cli.common import open_workspace as _workspace
from rlhf_train.cli.loop import add_loop_commands
from rlhf_train.cli.train import add_training_commands, cmd_models_merge
from rlhf_train.distributed import leave_process_group
from rlhf_train.errors import UserError

# Before transformers is imported anywhere: this tool never reaches a model hub at run
# time unless the user opts in by setting HF_HUB_OFFLINE=0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ---- init / up / serve ----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from db.engine import redact
    from rlhf_train.workspace_setup import init_workspace

    workspace = _workspace(args)
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

    workspace = _workspace(args, {"serve.port": args.port})
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

    workspace = _workspace(args, {"serve.port": args.port, "serve.address": args.address})
    workspace.sessions  # noqa: B018 - fail here, not in the browser, if not initialized
    return serve(
        workspace,
        workspace.config.serve.port,
        workspace.config.serve.address,
        with_worker=not args.no_worker,
    )


# ---- users ----------------------------------------------------------------------------


def _read_password() -> str:
    """From a hidden prompt on a terminal (asked twice), else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise UserError("The two passwords differ; run the command again.")
        return first
    line = sys.stdin.readline()
    if not line:
        raise UserError("No password on standard input; pipe one in or run on a terminal.")
    return line.rstrip("\r\n")


def cmd_users_add(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.users import create_user

    workspace = _workspace(args)
    sessions = workspace.sessions
    password = _read_password()
    with transaction(sessions) as session:
        user = create_user(session, args.name, args.role, password)
        print(f"Added {user.role} {user.name!r}.")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from db.users import list_users

    with _workspace(args).sessions() as session:
        users = list_users(session)
    if not users:
        print("No users yet; add one with `rlhf users add NAME --role lead`.")
    for user in users:
        state = "active" if user.active else "deactivated"
        print(f"{user.name:<24} {user.role:<10} {state}")
    return 0


# ---- prompts --------------------------------------------------------------------------


def _store_prompts(args: argparse.Namespace, texts: list[str], source: str) -> int:
    from db.engine import transaction
    from db.prompts import add_prompts, count_prompts
    from rlhf_train.prompts.sources import split_by_hash

    workspace = _workspace(args, {"prompts.eval_fraction": args.eval_fraction})
    split_of = split_by_hash(workspace.config.prompts.eval_fraction)
    with transaction(workspace.sessions) as session:
        result = add_prompts(session, texts, source=source, chat=args.chat, split_of=split_of)
        total = count_prompts(session)
    print(
        f"Imported {result.added} prompts from {source}; skipped {result.duplicates_in_input} "
        f"duplicates within the input and {result.already_present} already stored. "
        f"The workspace now holds {total} prompts."
    )
    return 0


def cmd_prompts_import(args: argparse.Namespace) -> int:
    from rlhf_train.prompts.sources import read_prompt_file

    path = Path(args.file)
    texts = read_prompt_file(path)
    return _store_prompts(args, texts, args.source or path.name)


def cmd_prompts_builtin(args: argparse.Namespace) -> int:
    from rlhf_train.prompts.sources import builtin_prompts

    texts = builtin_prompts(args.name, args.n, args.words, args.seed)
    return _store_prompts(args, texts, f"builtin:{args.name}")


def cmd_prompts_count(args: argparse.Namespace) -> int:
    from db.prompts import count_prompts

    with _workspace(args).sessions() as session:
        train, evaluation = count_prompts(session, "train"), count_prompts(session, "eval")
    print(f"{train + evaluation} prompts: {train} train, {evaluation} eval (held out).")
    return 0


# ---- models ---------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    from db.registry import current_policy, list_models
    from rlhf_train.models.builtin import BUILTIN_MODELS

    with _workspace(args).sessions() as session:
        models = list_models(session)
        current = current_policy(session)
        names = {model.id: model.name for model in models}
    print(f"{'name':<28} {'kind':<7} {'parent':<24} path")
    for model in models:
        marker = "  (current policy)" if current is not None and model.id == current.id else ""
        parent = names.get(model.parent_id, "-")
        print(f"{model.name:<28} {model.kind:<7} {parent:<24} {model.path}{marker}")
    unregistered = [b for name, b in BUILTIN_MODELS.items() if name not in names.values()]
    if unregistered:
        print("\nBuilt-in, registered on first use:")
        for builtin in unregistered:
            print(f"  {builtin.name:<26} {builtin.kind:<7} {builtin.description}")
    return 0


def cmd_models_register(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.registry import find_model, register_model
    from rlhf_train.models.source import check_model_spec

    workspace = _workspace(args)
    with transaction(workspace.sessions) as session:
        parent = None
        if args.parent:
            parent = find_model(session, args.parent)
            if parent is None:
                raise UserError(
                    f"No registered model {args.parent!r} to use as parent; see `rlhf models list`."
                )
        location = check_model_spec(args.location)
        model = register_model(
            session, name=args.name, kind=args.kind, path=location, parent=parent
        )
        print(f"Registered {model.kind} {model.name!r} at {model.path}.")
    return 0


def cmd_models_trace(args: argparse.Namespace) -> int:
    from rlhf_train.models.trace import trace_model

    with _workspace(args).sessions() as session:
        print("\n".join(trace_model(session, args.name)))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from db.registry import find_model, promote

    with transaction(_workspace(args).sessions) as session:
        model = find_model(session, args.name)
        if model is None or model.kind != "policy":
            raise UserError(
                f"There is no registered policy {args.name!r}; `rlhf models list` shows them."
            )
        promote(session, model)
    print(f"{args.name!r} is now the current policy; the next round samples from it.")
    return 0


# ---- generation and rounds ------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from rlhf_train.models.loading import configure_threads
    from rlhf_train.rounds.generate import generate_round, request_from_config

    workspace = _workspace(
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
            "runtime.device": args.device,
        },
    )
    configure_threads(workspace.config.runtime.threads)
    request = request_from_config(
        workspace, args.round, args.policy, args.previous_policy, args.reward
    )
    report = generate_round(workspace, request, progress=not args.no_progress)
    print(report.summary())
    return 0


def cmd_rounds_list(args: argparse.Namespace) -> int:
    from db.rounds import round_summaries

    with _workspace(args).sessions() as session:
        summaries = round_summaries(session)
    if not summaries:
        print("No rounds yet; create one with `rlhf generate --round 1`.")
        return 0
    print(f"{'round':>5}  {'status':<7} {'pairs':>6} {'judged':>14}  policy")
    for s in summaries:
        judged = f"{s.judgments}/{s.judgments_needed}"
        versus = f" vs {s.previous_policy}" if s.previous_policy else ""
        print(f"{s.number:>5}  {s.status:<7} {s.pairs:>6} {judged:>14}  {s.policy}{versus}")
    return 0


def cmd_rounds_show(args: argparse.Namespace) -> int:
    from rlhf_train.rounds.report import describe_round

    with _workspace(args).sessions() as session:
        print(describe_round(session, args.number))
    return 0


# ---- export and import ----------------------------------------------------------------


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
    result = export_preferences(_workspace(args), options)
    print(describe_export(result))
    return 0


def cmd_import_preferences(args: argparse.Namespace) -> int:
    from db.engine import transaction
    from rlhf_train.rounds.import_preferences import import_preferences, read_preference_rows

    workspace = _workspace(args)
    rows = read_preference_rows(Path(args.path))
    with transaction(workspace.sessions) as session:
        report = import_preferences(session, rows, source=args.source or Path(args.path).name)
    print(report.summary())
    return 0


# ---- the parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description=(
            "prefloop: collect human preferences on your model and turn them into a "
            "better model, round after round."
        ),
        epilog=_examples(
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

    _add_command(
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
    up = _add_command(
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
    up.add_argument("--port", type=int, help="port for the app (default 8501)")
    up.add_argument("--no-serve", action="store_true", help="stop after preparing the round")
    up.add_argument("--no-progress", action="store_true", help="no progress bars")
    up.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker beside the app (run `rlhf worker` elsewhere)",
    )

    serve = _add_command(
        commands,
        "serve",
        cmd_serve,
        "Serve the annotation app.",
        """
        rlhf serve
        rlhf serve --port 8600 --address 0.0.0.0
        """,
    )
    serve.add_argument("--port", type=int, help="port (default 8501)")
    serve.add_argument("--address", help="address to listen on (default localhost)")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not run a worker beside the app (run `rlhf worker` elsewhere)",
    )

    users = commands.add_parser("users", help="Manage annotator and lead accounts.")
    users_commands = users.add_subparsers(title="commands", metavar="COMMAND", required=True)
    users_add = _add_command(
        users_commands,
        "add",
        cmd_users_add,
        "Add a user. The password is asked for (hidden) or read from standard input, never "
        "taken as an argument, so it stays out of shell history.",
        """
        rlhf users add alice --role annotator
        printf '%s\\n' "$PASSWORD" | rlhf users add bob --role lead
        """,
    )
    users_add.add_argument("name")
    users_add.add_argument("--role", required=True, choices=["annotator", "lead"])
    _add_command(users_commands, "list", cmd_users_list, "List users.", "rlhf users list")

    prompts = commands.add_parser("prompts", help="Import prompts.")
    prompts_commands = prompts.add_subparsers(title="commands", metavar="COMMAND", required=True)
    prompts_import = _add_command(
        prompts_commands,
        "import",
        cmd_prompts_import,
        "Import prompts from a file: .txt (one per line), .csv (a 'prompt' column) or .jsonl "
        "(a 'prompt' key). Prompts already stored are skipped (by content hash).",
        """
        rlhf prompts import prompts.txt
        rlhf prompts import questions.jsonl --chat --source support-tickets
        """,
    )
    prompts_import.add_argument("file")
    prompts_import.add_argument(
        "--source", help="label stored with the prompts (default: file name)"
    )
    prompts_builtin = _add_command(
        prompts_commands,
        "builtin",
        cmd_prompts_builtin,
        "Import the opening words of packaged movie reviews as prompts to continue.",
        """
        rlhf prompts builtin imdb --n 2000 --words 8
        rlhf prompts builtin rotten_tomatoes --n 500 --words 5
        """,
    )
    prompts_builtin.add_argument("name", choices=["imdb", "rotten_tomatoes"])
    prompts_builtin.add_argument("--n", type=int, default=2000, help="how many (default 2000)")
    prompts_builtin.add_argument(
        "--words", type=int, default=8, help="words per prompt (default 8)"
    )
    prompts_builtin.add_argument("--seed", type=int, default=0, help="which reviews (default 0)")
    for sub in (prompts_import, prompts_builtin):
        sub.add_argument(
            "--chat",
            action="store_true",
            help="wrap these prompts in the policy's chat template when generating",
        )
        sub.add_argument(
            "--eval-fraction",
            type=float,
            help="share held out for evaluation, chosen by content hash (default 0.1)",
        )
    _add_command(
        prompts_commands, "count", cmd_prompts_count, "Count stored prompts.", "rlhf prompts count"
    )

    models = commands.add_parser("models", help="List and register models.")
    models_commands = models.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_command(
        models_commands,
        "list",
        cmd_models_list,
        "List registered models with their lineage, and the built-in defaults.",
        "rlhf models list",
    )
    register = _add_command(
        models_commands,
        "register",
        cmd_models_register,
        "Register a model from a local folder (written by save_pretrained) or a hub id.",
        """
        rlhf models register my-sft ./checkpoints/sft-final --kind policy
        rlhf models register rm-v1 /models/reward --kind reward --parent my-sft
        """,
    )
    register.add_argument("name")
    register.add_argument("location", help="a model folder or a hub id")
    register.add_argument("--kind", required=True, choices=["policy", "reward"])
    register.add_argument("--parent", help="registered model it was trained from")
    trace = _add_command(
        models_commands,
        "trace",
        cmd_models_trace,
        "Trace a model back to the judgments that made it: its training run, retraining job, "
        "export, rounds and reward model, then its parent, up to the root.",
        "rlhf models trace policy-r2",
    )
    trace.add_argument("name")
    promote = _add_command(
        models_commands,
        "promote",
        cmd_models_promote,
        "Make a registered policy the current one (the policy new rounds sample from).",
        "rlhf models promote sft-3",
    )
    promote.add_argument("name")
    merge = _add_command(
        models_commands,
        "merge",
        cmd_models_merge,
        "Merge a LoRA adapter policy into its base model, giving a full policy.",
        "rlhf models merge sft-3\nrlhf models merge sft-3 --name sft-3-full",
    )
    merge.add_argument("name", help="a registered LoRA adapter policy")
    merge.add_argument("--name", dest="new_name", help="name of the merged policy (NAME-merged)")

    generate = _add_command(
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
    generate.add_argument("--n-prompts", type=int, help="prompts in the round (default 32)")
    generate.add_argument(
        "--samples-per-prompt", type=int, help="samples per prompt, K (default 2)"
    )
    generate.add_argument(
        "--previous-fraction", type=float, help="share of new-vs-previous prompts"
    )
    generate.add_argument("--batch-size", type=int, help="sequences per generate call")
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--temperature", type=float)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--seed", type=int)
    generate.add_argument(
        "--pair-strategy",
        choices=["random", "uncertainty"],
        help="new-vs-new pairs: random, or the samples whose rewards are closest (uncertainty)",
    )
    generate.add_argument(
        "--reward",
        help="reward model for --pair-strategy uncertainty: registered name, folder or "
        "module:function (default: the newest reward model)",
    )
    generate.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")

    export = _add_command(
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

    import_ = _add_command(
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

    rounds = commands.add_parser("rounds", help="Inspect rounds.")
    rounds_commands = rounds.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_command(
        rounds_commands,
        "list",
        cmd_rounds_list,
        "List rounds with status and progress.",
        "rlhf rounds list",
    )
    show = _add_command(
        rounds_commands,
        "show",
        cmd_rounds_show,
        "Show one round: policies, pairs by strategy, sample lengths, example pairs.",
        "rlhf rounds show 1",
    )
    show.add_argument("number", type=int)
    add_training_commands(commands)
    add_loop_commands(commands)
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
