"""A database URL that is wrong ends in one sentence naming what is wrong, exit code 2,
and never shows its password; a database newer than the code says to upgrade prefloop."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import redact
from rlhf_train.cli import main

PASSWORD = "s3cret"


def _init(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("RLHF_DB_URL", url)
    code = main(["--workspace", str(tmp_path / "ws"), "init"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg//me:s3cret@db/x", "is not a valid SQLAlchemy URL"),
        ("postgresql:me:s3cret@db/x", "is not a valid SQLAlchemy URL"),
        (" postgresql+psycopg://me:s3cret@db/x", "starts or ends with a space"),
        ("postgresql+psycopg://me:s3cret@db/x ", "starts or ends with a space"),
        ("foo://me:s3cret@db/x", "names 'foo', but prefloop stores its data in SQLite or"),
        ("mysql://me:s3cret@db/x", "names 'mysql', but prefloop stores its data in SQLite or"),
        ("postgresql+psycopg://me:s3cret@db:abc/x", "has a port that is not a number"),
        ("postgresql://me:s3cret/x", "has a port that is not a number"),
        ("postgresql+asyncpg://me:s3cret@db/x", "needs the Python module asyncpg"),
        ("postgresql+nosuchdriver://me:s3cret@db/x", "names the driver 'nosuchdriver'"),
        ("postgresql+psycopg://me:s3cret@x@db/x", "percent-encode an '@' in the password"),
    ],
)
def test_a_bad_url_is_one_sentence_without_its_password(
    url: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, err = _init(url, tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: The database URL ")
    assert says in err
    assert PASSWORD not in err
    assert "***" in err


def test_a_password_in_the_query_is_hidden_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    code, err = _init(
        "postgresql+psycopg://me@127.0.0.1:1/x?password=s3cret", tmp_path, monkeypatch, capsys
    )
    assert code == 2
    assert "Cannot reach the database at" in err
    assert PASSWORD not in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://me:s3cret@db:5432/x", "postgresql+psycopg://me:***@db:5432/x"),
        ("postgresql+psycopg//me:s3cret@db/x", "postgresql+psycopg//me:***@db/x"),
        (" postgresql://me:s3cret@db/x", " postgresql://me:***@db/x"),
        ("postgresql://me:p@ss:w/rd@db/x", "postgresql://me:***@db/x"),
        ("postgresql://me:s3cret/x", "postgresql://me:***/x"),
        ("postgresql://me@db/x?sslmode=require&password=s3cret", None),
        ("sqlite:////data/prefloop.db", "sqlite:////data/prefloop.db"),
        ("postgresql://me@db:5432/x", "postgresql://me@db:5432/x"),
    ],
)
def test_redact_hides_the_password_of_any_string(url: str, shown: str | None) -> None:
    assert PASSWORD not in redact(url) and "p@ss" not in redact(url)
    if shown is not None:
        assert redact(url) == shown


def test_a_database_newer_than_the_code_says_to_upgrade_prefloop(
    workspace, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with workspace.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    workspace.engine.dispose()
    root = str(workspace.root)
    monkeypatch.setenv("RLHF_DB_URL", workspace.db_url)

    assert main(["--workspace", root, "users", "list"]) == 2
    err = capsys.readouterr().err
    assert "schema revision 9999_future, newer than this version of prefloop" in err
    assert err.rstrip().endswith("upgrade prefloop.")
    assert "rlhf init" not in err

    assert main(["--workspace", root, "init"]) == 2
    err = capsys.readouterr().err
    assert "upgrade prefloop" in err and "rlhf init" not in err
