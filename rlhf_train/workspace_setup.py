"""Creating and upgrading a workspace, and the first lead account."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from alembic.util.exc import CommandError

from db.engine import redact, transaction
from db.users import count_leads, create_user
from migrations.runner import current_revision, head_revision, upgrade
from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace

FIRST_LEAD_NAME = "lead"


@dataclass(frozen=True)
class InitReport:
    revision_before: str | None
    revision_after: str | None


def init_workspace(workspace: Workspace) -> InitReport:
    """Create the folders and settings file, and bring the schema to head. Idempotent."""
    workspace.create_layout()
    before = current_revision(workspace.engine)
    try:
        upgrade(workspace.engine)
    except CommandError as exc:
        raise UserError(
            f"The database {redact(workspace.db_url)} is at schema revision {before}, which this "
            f"version of prefloop does not know (its newest is {head_revision()}); upgrade "
            "prefloop or point RLHF_DB_URL at another database."
        ) from exc
    return InitReport(before, current_revision(workspace.engine))


def ensure_first_lead(workspace: Workspace) -> str | None:
    """Create the account 'lead' with a random password if no lead exists; return it.

    The password is returned once to be shown once; only its hash is stored.
    """
    with transaction(workspace.sessions) as session:
        if count_leads(session) > 0:
            return None
        password = secrets.token_urlsafe(12)
        create_user(session, FIRST_LEAD_NAME, "lead", password)
        return password
