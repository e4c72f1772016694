"""Logging in: password check with a lockout after repeated failures."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import User, utcnow
from db.users import password_matches

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)


class LoginRefused(UserError):
    """The message is safe to show: it never says whether the name exists."""


def authenticate(
    session: Session, name: str, password: str, *, now: datetime | None = None
) -> User:
    """The user for these credentials, or LoginRefused. Commit the session either way:
    failed attempts are counted in it."""
    now = now or utcnow()
    user = session.scalar(select(User).where(User.name == name.strip()))
    if user is None:
        raise LoginRefused("Wrong name or password.")
    if user.locked_until is not None and user.locked_until > now:
        minutes = max(1, round((user.locked_until - now).total_seconds() / 60))
        raise LoginRefused(
            f"Too many failed attempts: this account is locked for {minutes} more minute"
            f"{'s' if minutes != 1 else ''}; try again later or ask a lead to reset it."
        )
    if not password_matches(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
            raise LoginRefused(
                f"Too many failed attempts: this account is locked for "
                f"{int(LOCKOUT.total_seconds() // 60)} minutes."
            )
        raise LoginRefused("Wrong name or password.")
    if not user.active:
        raise LoginRefused("This account is deactivated; ask a lead to reactivate it.")
    user.failed_logins = 0
    user.locked_until = None
    return user
