"""SQLite is configured for concurrent use; unreachable databases fail with one sentence."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy.exc import IntegrityError

from db.engine import make_engine, session_factory, transaction
from db.errors import UserError
from db.models import Pair
from migrations.runner import upgrade


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_busy_timeout(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    engine.dispose()


def test_foreign_keys_are_enforced(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with pytest.raises(IntegrityError), transaction(session_factory(engine)) as session:
        session.add(Pair(round_id=99, prompt_id=99, sample_a_id=1, sample_b_id=2))
    engine.dispose()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_postgres_is_one_clear_sentence() -> None:
    url = f"postgresql+psycopg://someone:hunter2@127.0.0.1:{_closed_port()}/nowhere"
    with pytest.raises(UserError) as caught:
        make_engine(url)
    message = str(caught.value)
    assert message.startswith("Cannot reach the database at postgresql+psycopg://someone:***@")
    assert "hunter2" not in message
    assert "RLHF_DB_URL" in message


def test_malformed_url_is_rejected() -> None:
    with pytest.raises(UserError, match="not a valid SQLAlchemy URL"):
        make_engine("not a url at all")
