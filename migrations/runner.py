"""Run Alembic from code: `rlhf init` and the tests use these."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from db.errors import UserError

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


@contextmanager
def migration_transaction(connection: Connection) -> Iterator[None]:
    """Run the body (Alembic's migrations on `connection`) as one transaction.

    `rlhf init` and a by-hand `alembic -c migrations/alembic.ini` (env.py) both go
    through here, so both behave the same on SQLite:
    - Batch mode rebuilds a table by copy, drop and rename; with foreign keys enforced
      the drop fails while other tables point at it. So foreign keys are off during the
      migration, and `PRAGMA foreign_key_check` must find nothing dangling before commit.
    - Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so a
      CREATE or DROP that comes first would commit on its own and a failure later would
      leave half a migration. An explicit BEGIN makes the DDL part of the transaction.
    """
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # The pragma only takes effect outside a transaction, hence before begin().
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            if sqlite:
                connection.exec_driver_sql("BEGIN")
            yield
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    rows = {(row[0], row[1]) for row in broken}  # (table, rowid, ...)
                    tables = sorted({table for table, _rowid in rows})
                    raise UserError(
                        f"Migrating would leave {len(rows)} rows whose foreign keys point "
                        f"nowhere (in {', '.join(tables)}), so nothing was changed; delete "
                        "those rows or restore a backup, then migrate again."
                    )
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def _with_connection(engine: Engine, action: Callable[..., None], *args: str) -> None:
    config = alembic_config(engine)
    with engine.connect() as connection, migration_transaction(connection):
        config.attributes["connection"] = connection
        action(config, *args)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _with_connection(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _with_connection(engine, command.downgrade, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def is_known_revision(revision: str) -> bool:
    """Whether this code's migrations include `revision` (a newer prefloop's do not)."""
    return any(
        script.revision == revision
        for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()
    )
