"""Alembic environment. Run through migrations.runner (what `rlhf init` calls) or plain
`alembic -c migrations/alembic.ini` with RLHF_DB_URL set; both migrate in the same one
transaction (migrations.runner.migration_transaction)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from db.engine import make_engine
from db.errors import UserError
from db.models import Base
from migrations.runner import migration_transaction

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_standalone() -> None:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("RLHF_DB_URL")
    if not url:
        raise UserError("Set RLHF_DB_URL to the database to migrate.")
    engine = make_engine(url)
    try:
        with engine.connect() as connection, migration_transaction(connection):
            _run(connection)
    finally:
        engine.dispose()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # migrations.runner opened the connection and its transaction.
        _run(connection)
        return
    try:
        _run_standalone()
    except UserError as exc:
        # The alembic command prints a traceback for anything but its own errors; ours
        # are one sentence a user can act on.
        raise SystemExit(f"error: {exc}") from None


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_online()
