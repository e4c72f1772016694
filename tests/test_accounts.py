"""Login with lockout, user administration, training-run records, round administration
and the quality report, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from db.auth import MAX_FAILED_LOGINS, LoginRefused, authenticate
from db.engine import transaction
from db.errors import UserError
from db.models import TrainingRun, User, utcnow
from db.runs import enqueue_run, list_runs
from db.users import create_user, reset_password, set_active


def _login(workspace, name: str, password: str, **kwargs) -> User:
    """Like the login page: authenticate commits its own transactions."""
    return authenticate(workspace.sessions, name, password, **kwargs)


def test_login_and_lockout(workspace) -> None:
    with transaction(workspace.sessions) as session:
        create_user(session, "ann", "annotator", "correct horse")
    assert _login(workspace, "ann", "correct horse").name == "ann"
    with pytest.raises(LoginRefused, match="^Wrong name or password.$"):
        _login(workspace, "nobody", "correct horse")  # the same words as a wrong password
    for _ in range(MAX_FAILED_LOGINS - 1):
        with pytest.raises(LoginRefused, match="Wrong name or password"):
            _login(workspace, "ann", "wrong")
    with pytest.raises(LoginRefused, match="locked for 15 minutes"):
        _login(workspace, "ann", "wrong")
    with pytest.raises(LoginRefused, match="locked for 15 more minutes"):
        _login(workspace, "ann", "correct horse")  # even the right password, for a while
    later = utcnow() + timedelta(minutes=16)
    assert _login(workspace, "ann", "correct horse", now=later).failed_logins == 0


def test_deactivation_and_password_reset(workspace) -> None:
    with transaction(workspace.sessions) as session:
        ann = create_user(session, "ann", "annotator", "first password").id
        lead = create_user(session, "boss", "lead", "lead password").id
    with transaction(workspace.sessions) as session:
        set_active(session, ann, False)
    with pytest.raises(LoginRefused, match="deactivated"):
        _login(workspace, "ann", "first password")
    with transaction(workspace.sessions) as session:
        set_active(session, ann, True)
        reset_password(session, ann, "second password")
    assert _login(workspace, "ann", "second password").id == ann
    with pytest.raises(UserError, match="last active lead"), transaction(workspace.sessions) as s:
        set_active(s, lead, False)
    with pytest.raises(UserError, match="shorter than 8"), transaction(workspace.sessions) as s:
        reset_password(s, ann, "short")


def test_start_retraining_records_a_queued_run(workspace) -> None:
    with transaction(workspace.sessions) as session:
        lead = create_user(session, "boss", "lead", "lead password").id
        enqueue_run(session, "ppo", {"rounds": "all"}, lead)
        enqueue_run(session, "dpo", {}, lead)
    with workspace.sessions() as session:
        runs = list_runs(session)
        assert [(r.kind, r.status, r.created_by_id) for r in runs] == [
            ("dpo", "queued", lead),
            ("ppo", "queued", lead),
        ]
        assert session.scalar(select(TrainingRun.config).where(TrainingRun.kind == "ppo")) == {
            "rounds": "all"
        }
    with (
        pytest.raises(UserError, match="Unknown training kind"),
        transaction(workspace.sessions) as session,
    ):
        enqueue_run(session, "magic", {}, lead)
