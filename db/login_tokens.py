"""Staying logged in: a random token for the browser's cookie, its hash in the database.

A token stands for one login on one browser. It ends when it expires, when that browser
logs out, or for every browser of a user at once when the user's password is reset or
the account is deactivated.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.models import LoginToken, User, utcnow

LOGIN_LASTS = timedelta(days=14)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user_id: int, *, now: datetime | None = None) -> str:
    """A new token for `user_id`, valid for LOGIN_LASTS; only its hash is stored.

    The user's ended tokens are deleted on the way, so the table holds live logins and
    the few ended since the user last logged in.
    """
    now = now or utcnow()
    session.execute(
        delete(LoginToken).where(
            LoginToken.user_id == user_id,
            or_(LoginToken.expires_at <= now, LoginToken.revoked_at.is_not(None)),
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        LoginToken(
            user_id=user_id, token_hash=_hash(token), created_at=now, expires_at=now + LOGIN_LASTS
        )
    )
    session.flush()
    return token


def user_for_token(session: Session, token: str, *, now: datetime | None = None) -> User | None:
    """The active user `token` logs in, or None if it is unknown, expired or revoked."""
    now = now or utcnow()
    user = session.scalar(
        select(User)
        .join(LoginToken, LoginToken.user_id == User.id)
        .where(
            LoginToken.token_hash == _hash(token),
            LoginToken.revoked_at.is_(None),
            LoginToken.expires_at > now,
        )
    )
    return user if user is not None and user.active else None


def _revoke(session: Session, which: ColumnElement[bool], now: datetime | None) -> int:
    ended = session.execute(
        update(LoginToken)
        .where(which, LoginToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return ended.rowcount


def revoke_token(session: Session, token: str, *, now: datetime | None = None) -> None:
    """End the login `token` stands for (a logout); an unknown token is ignored."""
    _revoke(session, LoginToken.token_hash == _hash(token), now)


def revoke_user_tokens(session: Session, user_id: int, *, now: datetime | None = None) -> int:
    """End every login of `user_id` on every browser; the number ended."""
    return _revoke(session, LoginToken.user_id == user_id, now)
