"""User accounts: creation and password hashing (Argon2id, a memory-hard KDF)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.login_tokens import revoke_user_tokens
from db.models import USER_ROLES, User
from db.names import checked_name

MIN_PASSWORD_LENGTH = 8
USER_NAME_LENGTH: int = User.__table__.c.name.type.length
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"The password is shorter than {MIN_PASSWORD_LENGTH} characters; choose a longer one."
        )


def create_user(session: Session, name: str, role: str, password: str) -> User:
    name = checked_name(name, what="user name", max_length=USER_NAME_LENGTH, example="alice")
    if role not in USER_ROLES:
        raise UserError(f"Unknown role {role!r}; use one of: {', '.join(USER_ROLES)}.")
    _check_password(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise UserError(f"A user named {name!r} already exists; pick another name.")
    user = User(name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def count_leads(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(User).where(User.role == "lead", User.active)
        )
        or 0
    )


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"There is no user #{user_id}; reload the page.")
    return user


def set_active(session: Session, user_id: int, active: bool) -> User:
    user = _user(session, user_id)
    if not active and user.role == "lead" and user.active and count_leads(session) <= 1:
        raise UserError("This is the last active lead; add or activate another lead first.")
    user.active = active
    if not active:
        # Reactivating must not bring back the browsers that were logged in before.
        revoke_user_tokens(session, user_id)
    session.flush()
    return user


def reset_password(session: Session, user_id: int, password: str) -> User:
    """A new password; also lifts a lockout and logs the user out of every browser."""
    _check_password(password)
    user = _user(session, user_id)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    revoke_user_tokens(session, user_id)
    session.flush()
    return user
