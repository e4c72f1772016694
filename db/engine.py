"""Engine and session factory for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from db.errors import UserError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets annotators read while a judgment is written; foreign keys are off by
    # default in SQLite and the schema relies on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)
_URL_HELP = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
_BACKENDS = ("sqlite", "postgresql")


def redact(url: str) -> str:
    """`url` with its password hidden, for messages and logs; also for strings that are
    not valid URLs, which are the ones quoted in errors.

    Works on the text, not a parse: a URL that does not parse still has its password
    masked, and so does a password with an unencoded '@' (which the parser would split).
    """
    masked = _PASSWORD_PARAMETER.sub(r"\1***", url)
    head, at, rest = masked.rpartition("@")
    if at:
        slashes = head.find("//")
        start = slashes + 2 if slashes >= 0 else 0
        user, colon, _password = head[start:].partition(":")
        return f"{head[:start]}{user}:***@{rest}" if colon else masked
    # No '@': in scheme://HOST:X/... a non-numeric X is a password whose user or host is
    # missing (or a mistyped port); hide it rather than guess.
    slashes = masked.find("//")
    if slashes < 0:
        return masked
    authority, slash, path = masked[slashes + 2 :].partition("/")
    host, colon, port = authority.partition(":")
    if colon and not port.isdigit():
        return f"{masked[: slashes + 2]}{host}:***{slash}{path}"
    return masked


def parse_url(url: str) -> URL:
    """`url` parsed, or a UserError naming what is wrong with it (password masked)."""
    shown = repr(redact(url))
    if url != url.strip():
        raise UserError(
            f"The database URL {shown} starts or ends with a space; remove it from "
            "RLHF_DB_URL / [database] url in rlhf.toml."
        )
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - parsed on first use; a non-numeric port fails here
    except ArgumentError:
        raise UserError(
            f"The database URL {shown} is not a valid SQLAlchemy URL; {_URL_HELP}."
        ) from None
    except ValueError:
        raise UserError(
            f"The database URL {shown} has a port that is not a number; write HOST:PORT "
            "with a numeric port such as 5432, and percent-encode ':' in a password as %3A."
        ) from None
    if "@" in (parsed.host or ""):
        raise UserError(
            f"The database URL {shown} has more than one '@'; percent-encode an '@' in the "
            "password as %40."
        )
    if parsed.get_backend_name() not in _BACKENDS:
        raise UserError(
            f"The database URL {shown} names {parsed.get_backend_name()!r}, but prefloop "
            f"stores its data in SQLite or PostgreSQL; {_URL_HELP}."
        )
    return parsed


def _create_engine(url: URL, given: str) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
            event.listen(engine, "connect", _configure_sqlite)
            return engine
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    except NoSuchModuleError:
        raise UserError(
            f"The database URL {redact(given)!r} names the driver {url.get_driver_name()!r}, which "
            f"SQLAlchemy does not know; {_URL_HELP}."
        ) from None
    except ImportError as exc:
        raise UserError(
            f"The database URL {redact(given)!r} needs the Python module "
            f"{exc.name or 'of its driver'}, which is not installed; install it, or use "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB (psycopg comes with prefloop)."
        ) from None


def make_engine(url: str, *, check: bool = True) -> Engine:
    """An engine for `url`; with `check`, fail now with a clear message if unreachable."""
    engine = _create_engine(parse_url(url), url)
    if check:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError as exc:
            # Operational: unreachable, refused, bad password; Programming/Interface: an
            # option in the URL the driver rejects. Each is fixed in the URL or the server.
            engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            password = engine.url.password
            if password:  # a driver may quote the connection string it could not use
                reason = reason.replace(str(password), "***")
            raise UserError(
                f"Cannot reach the database at {redact(url)} ({reason}); start the server "
                "or fix RLHF_DB_URL / [database] url in rlhf.toml."
            ) from exc
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with factory() as session, session.begin():
        yield session
