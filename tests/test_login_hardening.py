"""Login lockout under concurrency, and names without an account that cannot be told apart
from real ones (issue 13, items 5 and 6), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import db.auth
from db.auth import FORGET_FAILURES_AFTER, MAX_FAILED_LOGINS, LoginRefused, authenticate
from db.engine import transaction
from db.models import LoginFailure, User, utcnow
from db.users import create_user, password_matches

PASSWORD = "correct horse"


@pytest.fixture
def ann(workspace) -> int:
    with transaction(workspace.sessions) as session:
        return create_user(session, "ann", "annotator", PASSWORD).id


def _refusal(workspace, name: str, password: str, **kwargs) -> str:
    with pytest.raises(LoginRefused) as refused:
        authenticate(workspace.sessions, name, password, **kwargs)
    return str(refused.value)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The password hashes that db.auth checks a password against, one entry per real
    Argon2 verification (the check itself runs unchanged)."""
    seen: list[str] = []
    lock = threading.Lock()

    def counted(password_hash: str, password: str) -> bool:
        with lock:
            seen.append(password_hash)
        return password_matches(password_hash, password)

    monkeypatch.setattr(db.auth, "password_matches", counted)
    return seen


def test_parallel_wrong_passwords_check_at_most_the_limit(workspace, ann, checks) -> None:
    threads = 10
    start = threading.Barrier(threads)
    answers: list[str] = []
    errors: list[BaseException] = []

    def attempt(index: int) -> None:
        try:
            start.wait()
            answers.append(_refusal(workspace, "ann", f"wrong password {index}"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    workers = [threading.Thread(target=attempt, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors
    assert len(answers) == threads
    assert len(checks) <= MAX_FAILED_LOGINS  # before: all 10 were checked
    assert all("Too many failed attempts" in a or a == "Wrong name or password." for a in answers)
    with workspace.sessions() as session:
        user = session.get(User, ann)
        assert user.locked_until is not None and user.locked_until > utcnow()
    checked = len(checks)
    assert "locked for 15 more minutes" in _refusal(workspace, "ann", PASSWORD)
    assert len(checks) == checked  # refused without a check while locked
    later = utcnow() + timedelta(minutes=16)
    assert authenticate(workspace.sessions, " ann ", PASSWORD, now=later).id == ann
    with workspace.sessions() as session:
        assert session.get(User, ann).failed_logins == 0


def test_unknown_names_answer_like_real_ones(workspace, ann, checks) -> None:
    start = utcnow()
    answers = {
        name: [
            _refusal(workspace, name, f"wrong {i}", now=start + timedelta(seconds=i))
            for i in range(MAX_FAILED_LOGINS + 2)
        ]
        for name in ("ann", "nobody")
    }
    assert answers["ann"] == answers["nobody"]
    assert answers["ann"][MAX_FAILED_LOGINS - 2] == "Wrong name or password."
    assert answers["ann"][MAX_FAILED_LOGINS - 1].endswith("locked for 15 minutes.")
    assert "locked for 15 more minutes" in answers["ann"][MAX_FAILED_LOGINS + 1]
    # Both names had their passwords checked, the same number of times; the unknown one
    # against the dummy hash.
    assert len(checks) == 2 * MAX_FAILED_LOGINS
    assert checks.count(db.auth._DUMMY_HASH) == MAX_FAILED_LOGINS
    # The lock ends for both alike, and the unknown name's count restarts.
    later = start + timedelta(minutes=16)
    assert _refusal(workspace, "nobody", "again", now=later) == "Wrong name or password."
    assert authenticate(workspace.sessions, "ann", PASSWORD, now=later).id == ann


def test_unknown_names_are_stored_hashed_and_forgotten(workspace) -> None:
    start = utcnow()
    _refusal(workspace, "hunter2-typed-as-a-name", "x", now=start)
    with workspace.sessions() as session:
        rows = session.scalars(select(LoginFailure)).all()
        assert [row.failed_logins for row in rows] == [1]
        # Only a hash of what was typed is kept: people type passwords into the name field.
        assert rows[0].name_hash == hashlib.sha256(b"hunter2-typed-as-a-name").hexdigest()
    # Any login a day later deletes rows that old (and their failures no longer count).
    _refusal(workspace, "someone else", "x", now=start + FORGET_FAILURES_AFTER)
    with workspace.sessions() as session:
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 1


def test_old_failures_are_forgotten_for_accounts_too(workspace, ann) -> None:
    start = utcnow()
    for i in range(MAX_FAILED_LOGINS - 1):
        _refusal(workspace, "ann", "wrong", now=start + timedelta(seconds=i))
    later = start + FORGET_FAILURES_AFTER + timedelta(minutes=1)
    assert _refusal(workspace, "ann", "wrong", now=later) == "Wrong name or password."
    with workspace.sessions() as session:
        assert session.get(User, ann).failed_logins == 1


def _seconds(workspace, name: str, password: str) -> float:
    began = time.perf_counter()
    with pytest.raises(LoginRefused):
        authenticate(workspace.sessions, name, password)
    return time.perf_counter() - began


def test_an_unknown_name_takes_as_long_as_a_real_one(workspace, ann) -> None:
    with transaction(workspace.sessions) as session:
        create_user(session, "bea", "annotator", PASSWORD)  # so that no name locks here
    known, unknown = [], []
    for i in range(3):
        known.append(_seconds(workspace, "ann" if i < 2 else "bea", "wrong password"))
        unknown.append(_seconds(workspace, f"nobody-{i}", "wrong password"))
    # Before: 0.3 ms against about 200 ms. A busy machine slows either, hence medians and
    # a wide margin.
    assert statistics.median(unknown) > 0.3 * statistics.median(known)
