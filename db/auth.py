"""Logging in: password check with a lockout after repeated failures.

Each password check is paid for before it runs: one short transaction reserves an attempt
by counting it (atomically, in the database), the Argon2 check then runs outside any
transaction (it takes ~200 ms; on SQLite a transaction held that long would block every
writer), and a success resets the count in a second transaction. So however many
requests arrive at once, no more than MAX_FAILED_LOGINS passwords are checked against an
account before it locks: the reservation that reaches the limit locks the account
itself, and later ones are refused without a check.

A name without an account gets the same treatment, so the answers cannot tell which
names exist: its failures are counted in login_failures (by a hash of the name), it
locks after the same number of tries, and its password is checked against a dummy hash
made with the same Argon2 parameters, which takes as long as a real check.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.errors import UserError
from db.models import LoginFailure, User, UTCDateTime, utcnow
from db.users import hash_password, password_matches

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
# Failures older than this no longer count toward a lock, for accounts and unknown names
# alike; login_failures rows that old are deleted, so that table stays small.
FORGET_FAILURES_AFTER = timedelta(days=1)

# Made once per process with the same hasher as real passwords, so checking against it
# costs what a real check costs. The password it hashes is random and thrown away.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(32))


class LoginRefused(UserError):
    """The message is safe to show: it never says whether the name exists."""


@dataclass(frozen=True)
class _Reservation:
    """The outcome of reserving a password check for a name."""

    user_id: int | None  # None: no account has this name
    password_hash: str
    # Set when the name was locked already: refuse without checking.
    locked_until: datetime | None = None
    # True when this reservation used up the last attempt and locked the name.
    locks: bool = False


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _not_locked(locked_until: Any, now: datetime) -> ColumnElement[bool]:
    return or_(locked_until.is_(None), locked_until <= now)


def _reserve_values(count: Any, failed_at: Any, now: datetime) -> dict[str, Any]:
    """The new failed_logins, locked_until and failed_login_at of a name that was not
    locked, after counting one more attempt; the same for users and login_failures."""
    stale = or_(failed_at.is_(None), failed_at <= now - FORGET_FAILURES_AFTER)
    attempt = case((stale, 1), else_=count + 1)
    locks = attempt >= MAX_FAILED_LOGINS
    return {
        "failed_logins": case((locks, 0), else_=attempt),
        "locked_until": case((locks, literal(now + LOCKOUT, UTCDateTime())), else_=None),
        "failed_login_at": literal(now, UTCDateTime()),
    }


def _reserve_user(session: Session, user_id: int, now: datetime) -> datetime | None | bool:
    """Count an attempt on the account; the returned row's locked_until, or False when
    the account was locked already (nothing counted)."""
    row = session.execute(
        update(User)
        .where(User.id == user_id, _not_locked(User.locked_until, now))
        .values(_reserve_values(User.failed_logins, User.failed_login_at, now))
        .returning(User.locked_until)
    ).one_or_none()
    return False if row is None else row[0]


def _reserve_name(session: Session, name_hash: str, now: datetime) -> datetime | None | bool:
    """The same for a name without an account, as one atomic upsert."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    first = MAX_FAILED_LOGINS <= 1
    statement = insert(LoginFailure).values(
        name_hash=name_hash,
        failed_logins=0 if first else 1,
        locked_until=now + LOCKOUT if first else None,
        failed_login_at=now,
    )
    row = session.execute(
        statement.on_conflict_do_update(
            index_elements=[LoginFailure.name_hash],
            set_=_reserve_values(LoginFailure.failed_logins, LoginFailure.failed_login_at, now),
            where=_not_locked(LoginFailure.locked_until, now),
        ).returning(LoginFailure.locked_until)
    ).one_or_none()
    return False if row is None else row[0]


def _reserve(sessions: sessionmaker[Session], name: str, now: datetime) -> _Reservation:
    with transaction(sessions) as session:
        # A write first: on SQLite it takes the write lock before anything is read, so
        # the reservation below cannot fail on a snapshot another writer made stale.
        session.execute(
            delete(LoginFailure).where(LoginFailure.failed_login_at <= now - FORGET_FAILURES_AFTER)
        )
        user = session.execute(
            select(User.id, User.password_hash).where(User.name == name)
        ).one_or_none()
        if user is not None:
            user_id, password_hash = user
            reserved = _reserve_user(session, user_id, now)
            lock_of = select(User.locked_until).where(User.id == user_id)
        else:
            user_id, password_hash, name_hash = None, _DUMMY_HASH, _name_hash(name)
            reserved = _reserve_name(session, name_hash, now)
            lock_of = select(LoginFailure.locked_until).where(LoginFailure.name_hash == name_hash)
        if reserved is not False:
            return _Reservation(user_id, password_hash, locks=reserved is not None)
        # Locked: read the lock only now. On PostgreSQL the reservation saw a lock that
        # another request committed after this transaction's first read; a success may
        # even have lifted it since, and then this request is still refused unchecked.
        locked_until = session.scalar(lock_of)
        if locked_until is None or locked_until <= now:
            locked_until = now + LOCKOUT
        return _Reservation(user_id, password_hash, locked_until=locked_until)


def _locked_message(locked_until: datetime, now: datetime) -> str:
    minutes = max(1, round((locked_until - now).total_seconds() / 60))
    return (
        f"Too many failed attempts: this account is locked for {minutes} more minute"
        f"{'s' if minutes != 1 else ''}; try again later or ask a lead to reset it."
    )


def _succeed(sessions: sessionmaker[Session], user_id: int) -> User:
    with transaction(sessions) as session:
        session.execute(
            update(User).where(User.id == user_id).values(failed_logins=0, locked_until=None)
        )
        user = session.get(User, user_id, populate_existing=True)
        if user is None:
            raise LoginRefused("Wrong name or password.")  # deleted during the check
        return user


def authenticate(
    sessions: sessionmaker[Session], name: str, password: str, *, now: datetime | None = None
) -> User:
    """The user for these credentials, or LoginRefused. Runs its own short transactions
    (see the module docstring); the caller passes the session factory, not a session.
    The name is stripped, as create_user strips it."""
    now = now or utcnow()
    name = name.strip()
    reservation = _reserve(sessions, name, now)
    if reservation.locked_until is not None:
        raise LoginRefused(_locked_message(reservation.locked_until, now))
    matches = password_matches(reservation.password_hash, password)
    if matches and reservation.user_id is not None:
        user = _succeed(sessions, reservation.user_id)
        if not user.active:
            raise LoginRefused("This account is deactivated; ask a lead to reactivate it.")
        return user
    if reservation.locks:
        raise LoginRefused(
            f"Too many failed attempts: this account is locked for "
            f"{int(LOCKOUT.total_seconds() // 60)} minutes."
        )
    raise LoginRefused("Wrong name or password.")
