"""The README's by-hand `alembic -c migrations/alembic.ini ...` migrates a SQLite file
with rows the way `rlhf init` does: no foreign-key failure, no `_alembic_tmp_*` table
left, rows kept, and a migration that fails changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from db.engine import make_engine, session_factory, transaction
from db.models import Evaluation, LoginToken, Model, User, utcnow
from migrations.runner import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from rlhf_train.cli import main
from tests.test_migrations import _fill_every_table

REPO = Path(__file__).resolve().parents[1]


def _alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(MIGRATIONS_DIR / "alembic.ini"), *args],
        cwd=REPO,
        env=env | {"RLHF_DB_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar()
            for table in inspect(connection).get_table_names()
        }


def _fill(engine: Engine) -> None:
    """A row in every table this test knows, including the later revisions' tables."""
    _fill_every_table(engine)
    with transaction(session_factory(engine)) as session:
        user = session.query(User).one()
        policy = session.query(Model).one()
        session.add(
            LoginToken(user_id=user.id, token_hash="t" * 64, expires_at=utcnow() + timedelta(1))
        )
        session.add(Evaluation(policy_id=policy.id, report_path="/reports/1"))


def _revisions_down_from_head() -> list[str]:
    """Every revision from head down to the first, in that order."""
    return [script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()]


def test_alembic_by_hand_downgrades_and_upgrades_with_rows(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    url = f"sqlite:///{workspace / 'prefloop.db'}"
    engine = make_engine(url)
    upgrade(engine)
    _fill(engine)
    filled = _counts(engine)
    assert all(filled[t] > 0 for t in ("users", "judgments", "pairs", "login_tokens"))

    revisions = _revisions_down_from_head()
    for expected in revisions[1:]:  # down one revision at a time, to the first
        result = _alembic(url, "downgrade", "-1")
        assert result.returncode == 0, result.stderr
        assert current_revision(engine) == expected
        now = _counts(engine)
        assert not [t for t in now if t.startswith("_alembic_tmp")]
        assert {t: filled[t] for t in now if t != "alembic_version"} == {
            t: n for t, n in now.items() if t != "alembic_version"
        }

    result = _alembic(url, "upgrade", "head")
    assert result.returncode == 0, result.stderr
    assert current_revision(engine) == head_revision()
    after = _counts(engine)
    assert not [t for t in after if t.startswith("_alembic_tmp")]
    first_tables = {t for t in _counts_at_first_revision(tmp_path) if t != "alembic_version"}
    assert {t: after[t] for t in first_tables} == {t: filled[t] for t in first_tables}
    engine.dispose()

    assert main(["--workspace", str(workspace), "init"]) == 0

    result = _alembic(url, "downgrade", "base")
    assert result.returncode == 0, result.stderr
    assert set(_counts(make_engine(url))) <= {"alembic_version"}
    assert _alembic(url, "upgrade", "head").returncode == 0
    assert main(["--workspace", str(workspace), "init"]) == 0


def _counts_at_first_revision(tmp_path: Path) -> dict[str, int]:
    """The tables of the first revision (those whose rows survive the whole walk)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'first.db'}")
    upgrade(engine, _revisions_down_from_head()[-1])
    counts = _counts(engine)
    engine.dispose()
    return counts


def test_a_failing_migration_changes_nothing(tmp_path: Path, capsys) -> None:
    """A dangling foreign key fails the check before commit; the tables created by the
    migrations that ran before it are rolled back too, by hand and through `rlhf init`."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    url = f"sqlite:///{workspace / 'prefloop.db'}"
    engine = make_engine(url)
    first = _revisions_down_from_head()[-1]
    upgrade(engine, first)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql(
            "INSERT INTO judgments (pair_id, annotator_id, choice, rationale, flags, "
            "left_sample, ms_spent, created_at) VALUES (99, 98, 'A', '', '{}', 'A', 0, "
            "'2026-01-01')"
        )
        connection.commit()
    before = _counts(engine)

    result = _alembic(url, "upgrade", "head")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: Migrating would leave 1 rows whose foreign keys point nowhere (in judgments), "
        "so nothing was changed; delete those rows or restore a backup, then migrate again."
    ]
    assert current_revision(engine) == first
    assert _counts(engine) == before

    assert main(["--workspace", str(workspace), "init"]) == 2
    assert "foreign keys point nowhere" in capsys.readouterr().err
    assert current_revision(engine) == first
    assert _counts(engine) == before
    engine.dispose()
