"""`rlhf users add|list`: annotator and lead accounts."""

from __future__ import annotations

import argparse
import getpass
import sys

from rlhf_train.cli.common import Commands, add_command, add_group, open_workspace
from rlhf_train.errors import UserError


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

    workspace = open_workspace(args)
    sessions = workspace.sessions
    password = _read_password()
    with transaction(sessions) as session:
        user = create_user(session, args.name, args.role, password)
        print(f"Added {user.role} {user.name!r}.")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from db.users import list_users

    with open_workspace(args).sessions() as session:
        users = list_users(session)
    if not users:
        print("No users yet; add one with `rlhf users add NAME --role lead`.")
    for user in users:
        state = "active" if user.active else "deactivated"
        print(f"{user.name:<24} {user.role:<10} {state}")
    return 0


def add_commands(commands: Commands) -> None:
    users = add_group(commands, "users", "Manage annotator and lead accounts.")
    add = add_command(
        users,
        "add",
        cmd_users_add,
        "Add a user. The password is asked for (hidden) or read from standard input, never "
        "taken as an argument, so it stays out of shell history.",
        """
        rlhf users add alice --role annotator
        printf '%s\\n' "$PASSWORD" | rlhf users add bob --role lead
        """,
    )
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["annotator", "lead"])
    add_command(users, "list", cmd_users_list, "List users.", "rlhf users list")
