"""Login tokens on SQLite and PostgreSQL: what logs a browser in, and what ends it."""

from __future__ import annotations

from sqlalchemy import select

from db.engine import transaction
from db.login_tokens import (
    LOGIN_LASTS,
    issue_token,
    revoke_token,
    revoke_user_tokens,
    user_for_token,
)
from db.models import LoginToken, User, utcnow
from db.users import create_user, reset_password, set_active

PASSWORD = "password-123"


def _user_id(token: str, workspace, now=None) -> int | None:
    with workspace.sessions() as session:
        user = user_for_token(session, token, now=now)
        return None if user is None else user.id


def _users(workspace, *names: str) -> list[int]:
    with transaction(workspace.sessions) as session:
        return [create_user(session, name, "annotator", PASSWORD).id for name in names]


def test_a_token_logs_in_its_user_until_it_expires(workspace) -> None:
    ann, bea = _users(workspace, "ann", "bea")
    start = utcnow()
    with transaction(workspace.sessions) as session:
        token = issue_token(session, ann, now=start)
        other = issue_token(session, bea, now=start)
    assert token != other
    assert _user_id(token, workspace) == ann and _user_id(other, workspace) == bea
    assert _user_id(token, workspace, now=start + LOGIN_LASTS - (LOGIN_LASTS / 100)) == ann
    assert _user_id(token, workspace, now=start + LOGIN_LASTS) is None
    assert _user_id("", workspace) is None
    assert _user_id(token[:-1], workspace) is None
    # Only a hash is stored: the database alone logs nobody in.
    with workspace.sessions() as session:
        stored = list(session.scalars(select(LoginToken.token_hash)))
    assert len(stored) == 2 and token not in stored and other not in stored


def test_logout_ends_one_token_and_a_reset_or_deactivation_ends_them_all(workspace) -> None:
    ann, bea = _users(workspace, "ann", "bea")
    with transaction(workspace.sessions) as session:
        laptop, phone, tablet = (issue_token(session, ann) for _ in range(3))
        beas = issue_token(session, bea)

    with transaction(workspace.sessions) as session:
        revoke_token(session, laptop)
        revoke_token(session, "not-a-token")  # ignored
    assert _user_id(laptop, workspace) is None and _user_id(phone, workspace) == ann

    with transaction(workspace.sessions) as session:
        reset_password(session, ann, "another-password-1")
    assert _user_id(phone, workspace) is None and _user_id(tablet, workspace) is None
    assert _user_id(beas, workspace) == bea

    with transaction(workspace.sessions) as session:
        fresh = issue_token(session, ann)
        set_active(session, ann, False)
    assert _user_id(fresh, workspace) is None
    with transaction(workspace.sessions) as session:
        set_active(session, ann, True)
        assert revoke_user_tokens(session, ann) == 0  # all ended already
    # Reactivation does not bring back the browsers logged in before.
    assert _user_id(fresh, workspace) is None
    assert _user_id(beas, workspace) == bea

    # The next login clears the user's ended tokens away, and only theirs.
    with transaction(workspace.sessions) as session:
        issue_token(session, ann)
        owners = sorted(session.scalars(select(LoginToken.user_id)))
    assert owners == sorted([ann, bea])


def test_a_deactivated_user_is_refused_even_with_a_live_token(workspace) -> None:
    [ann] = _users(workspace, "ann")
    with transaction(workspace.sessions) as session:
        token = issue_token(session, ann)
    with transaction(workspace.sessions) as session:
        # Deactivated directly, not through set_active, so that the token stays live.
        session.get(User, ann).active = False
    assert _user_id(token, workspace) is None
