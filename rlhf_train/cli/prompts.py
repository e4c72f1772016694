"""`rlhf prompts import|builtin|count`: the prompts rounds are generated from."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhf_train.cli.common import Commands, add_command, add_group, open_workspace
from rlhf_train.config import setting_help


def _store_prompts(args: argparse.Namespace, texts: list[str], source: str) -> int:
    from db.engine import transaction
    from db.prompts import add_prompts, count_prompts
    from rlhf_train.prompts.split import split_by_hash

    workspace = open_workspace(args, {"prompts.eval_fraction": args.eval_fraction})
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

    with open_workspace(args).sessions() as session:
        train, evaluation = count_prompts(session, "train"), count_prompts(session, "eval")
    print(f"{train + evaluation} prompts: {train} train, {evaluation} eval (held out).")
    return 0


def add_commands(commands: Commands) -> None:
    prompts = add_group(commands, "prompts", "Import prompts.")
    import_ = add_command(
        prompts,
        "import",
        cmd_prompts_import,
        "Import prompts from a file: .txt (one per line), .csv (a 'prompt' column) or .jsonl "
        "(a 'prompt' key, or a 'messages' list of system/user/assistant turns ending with a "
        "user turn: a conversation, always chat). Prompts already stored are skipped (by "
        "content hash).",
        """
        rlhf prompts import prompts.txt
        rlhf prompts import questions.jsonl --chat --source support-tickets
        rlhf prompts import chats.jsonl   # {"messages": [{"role": "user", "content": ...}]}
        """,
    )
    import_.add_argument("file")
    import_.add_argument("--source", help="label stored with the prompts (default: file name)")
    builtin = add_command(
        prompts,
        "builtin",
        cmd_prompts_builtin,
        "Import the opening words of packaged movie reviews as prompts to continue.",
        """
        rlhf prompts builtin imdb --n 2000 --words 8
        rlhf prompts builtin rotten_tomatoes --n 500 --words 5
        """,
    )
    builtin.add_argument("name", choices=["imdb", "rotten_tomatoes"])
    builtin.add_argument("--n", type=int, default=2000, help="how many (default 2000)")
    builtin.add_argument("--words", type=int, default=8, help="words per prompt (default 8)")
    builtin.add_argument("--seed", type=int, default=0, help="which reviews (default 0)")
    for sub in (import_, builtin):
        sub.add_argument(
            "--chat",
            action="store_true",
            help="wrap these prompts in the policy's chat template when generating",
        )
        sub.add_argument(
            "--eval-fraction",
            type=float,
            help=setting_help("prompts.eval_fraction"),
        )
    add_command(prompts, "count", cmd_prompts_count, "Count stored prompts.", "rlhf prompts count")
