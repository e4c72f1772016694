"""User accounts: creation and password hashing (Argon2id, a memory-hard KDF)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import USER_ROLES, User

MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, name: str, role: str, password: str) -> User:
    name = name.strip()
    if not name:
        raise UserError("The user name is empty; give a name such as 'alice'.")
    if role not in USER_ROLES:
        raise UserError(f"Unknown role {role!r}; use one of: {', '.join(USER_ROLES)}.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"The password is shorter than {MIN_PASSWORD_LENGTH} characters; choose a longer one."
        )
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
