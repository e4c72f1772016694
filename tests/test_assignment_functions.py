"""On PostgreSQL with row locks, next_pair and a first vote run as database functions
(migration 0010); the Python path (SQLite, and "global" locking) is their definition.
The same scripted annotators, run once through each on the same round, must see the same
pairs the same way round, be refused at the same points and leave the same rows."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, text, update

from db.engine import transaction
from db.judgments import (
    LEASE_SECONDS,
    PairUnavailable,
    fetch_next_pair,
    locking,
    next_pair,
    read_progress,
    record_judgment,
    set_locking,
    submit_judgment,
    undo_last,
)
from db.models import Judgment, Pair, PairLease, utcnow
from db.round_admin import set_gold, update_settings
from db.users import create_user
from rlhf_train.rounds.generate import generate_round
from tests.helpers import round_request, store_prompts

pytestmark = pytest.mark.postgres

CHOICES = ("A", "B", "tie", "both_bad", "skip")


@pytest.fixture
def pg_workspace(tmp_path, postgres_url):
    from rlhf_train.workspace import Workspace
    from rlhf_train.workspace_setup import init_workspace

    workspace = Workspace.open(tmp_path / "ws", {"database.url": postgres_url})
    init_workspace(workspace)
    yield workspace
    set_locking("rows")
    workspace.engine.dispose()


def _reset(workspace) -> None:
    with transaction(workspace.sessions) as session:
        session.execute(delete(PairLease))
        session.execute(delete(Judgment))
        session.execute(update(Pair).values(judgment_count=0))


def _fetch(workspace, user: int, now, rng: random.Random, page: bool):
    if page:  # the annotate page's entry point: one autocommitted call with row locks
        return fetch_next_pair(workspace.sessions, user, now=now, rng=rng)
    with transaction(workspace.sessions) as session:
        return next_pair(session, user, now=now, rng=rng)


def _judge(workspace, user: int, pair_id: int, choice: str, side: str, page: bool) -> None:
    if page:
        submit_judgment(workspace.sessions, user, pair_id, choice=choice, left_sample=side)
        return
    with transaction(workspace.sessions) as session:
        record_judgment(session, user, pair_id, choice=choice, left_sample=side)


def _script(workspace, annotators: list[int], steps: int, page: bool) -> list[tuple]:
    """Annotators taking turns at random: fetch, judge (any choice, now and then twice or
    after their lease expired), undo now and then; every outcome in order. `page`: through
    the page's functions (each its own transaction), else inside the caller's."""
    rng = random.Random(7)
    pair_rngs = {user: random.Random(user) for user in annotators}
    start = utcnow()
    clock = {user: start for user in annotators}
    shown: dict[int, tuple[int, str] | None] = dict.fromkeys(annotators)
    trace: list[tuple] = []
    for _ in range(steps):
        user = rng.choice(annotators)
        # Now and then an annotator walks away past their lease, so others take the pair.
        clock[user] += timedelta(seconds=LEASE_SECONDS + 1 if rng.random() < 0.1 else 5)
        now = clock[user]
        action = rng.random()
        if action < 0.08:
            with transaction(workspace.sessions) as session:
                trace.append((user, "undo", undo_last(session, user, now=now)))
            continue
        if shown[user] is None or action < 0.25:
            got = _fetch(workspace, user, now, pair_rngs[user], page)
            shown[user] = None if got is None else (got.pair_id, got.left_sample)
            trace.append((user, "next", shown[user]))
            continue
        pair_id, side = shown[user]
        choice = rng.choice(CHOICES)
        for _repeat in range(2 if rng.random() < 0.15 else 1):
            try:
                _judge(workspace, user, pair_id, choice, side, page)
                trace.append((user, "judged", pair_id, choice))
            except PairUnavailable:
                trace.append((user, "refused", pair_id, choice))
        shown[user] = None
    with workspace.sessions() as session:
        rows = session.execute(
            select(
                Judgment.pair_id, Judgment.annotator_id, Judgment.choice, Judgment.left_sample
            ).order_by(Judgment.pair_id, Judgment.annotator_id)
        ).all()
        counts = session.execute(select(Pair.id, Pair.judgment_count).order_by(Pair.id)).all()
        leases = session.execute(
            select(PairLease.pair_id, PairLease.annotator_id, PairLease.left_sample).order_by(
                PairLease.pair_id, PairLease.annotator_id
            )
        ).all()
    return trace + [("rows", tuple(rows)), ("counts", tuple(counts)), ("leases", tuple(leases))]


@pytest.mark.parametrize("page", [False, True], ids=["in-a-transaction", "page-autocommit"])
def test_the_database_functions_decide_as_the_python_path(
    pg_workspace, tiny_policy, page: bool
) -> None:
    workspace = pg_workspace
    store_prompts(workspace, [f"Prompt {i}" for i in range(10)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=10), False)
    with transaction(workspace.sessions) as session:
        update_settings(session, 1, overlap=2, gold_rate=0.3, guidelines="")
        first, second = session.scalars(select(Pair.id).order_by(Pair.id).limit(2)).all()
        set_gold(session, first, "A")
        set_gold(session, second, "B")
        annotators = [create_user(session, name, "annotator", "password-123").id for name in "abcd"]

    with workspace.engine.connect() as connection:
        defined = connection.execute(
            text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'prefloop_%'")
        ).scalar()
    assert defined == 4  # migration 0010 made them
    with workspace.engine.connect() as connection:
        settings = connection.execute(
            text("SELECT proname, proconfig FROM pg_proc WHERE proname LIKE 'prefloop_%'")
        ).all()
    # Migration 0011: planned once per connection, never for one annotator's stale estimate.
    assert all(config == ["plan_cache_mode=force_generic_plan"] for _, config in settings)

    traces = {}
    for name in ("global", "rows"):
        set_locking(name)
        assert locking() == name
        _reset(workspace)
        traces[name] = _script(workspace, annotators, steps=260, page=page)
    python, database = traces["global"], traces["rows"]
    kinds = {entry[1] for entry in python if isinstance(entry[1], str)}
    assert {"next", "judged", "refused", "undo"} <= kinds  # the script reached every case
    assert any(entry[1] == "next" and entry[2] is None for entry in python)  # ran dry too
    assert database == python


def test_the_page_calls_commit_alone_and_leave_no_autocommit_behind(pg_workspace, tiny_policy):
    """A first vote through submit_judgment is stored and counted at once (the progress
    bar sees it), a refused one leaves neither judgment nor lease, a resubmit updates the
    one row; and the pooled connection the autocommit call used runs a later transaction
    that rolls back as a transaction should."""
    workspace = pg_workspace
    set_locking("rows")
    store_prompts(workspace, [f"Prompt {i}" for i in range(3)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=3), False)
    with transaction(workspace.sessions) as session:
        update_settings(session, 1, overlap=1, gold_rate=0.0, guidelines="")
        first, second = (
            create_user(session, name, "annotator", "password-123").id for name in "ab"
        )
    shown = fetch_next_pair(workspace.sessions, first, rng=random.Random(1))
    rival = fetch_next_pair(workspace.sessions, second, rng=random.Random(2))
    assert shown is not None and rival is not None and shown.pair_id != rival.pair_id
    before = read_progress(workspace.sessions, first).round_done  # the page's read
    submit_judgment(workspace.sessions, first, shown.pair_id, choice="A", left_sample="A")
    submit_judgment(workspace.sessions, first, shown.pair_id, choice="B", left_sample="A")
    assert read_progress(workspace.sessions, first).round_done == before + 1
    with workspace.sessions() as session:
        stored = (
            session.execute(select(Judgment.choice).where(Judgment.pair_id == shown.pair_id))
            .scalars()
            .all()
        )
        assert stored == ["B"]  # the resubmit updated the one row
        assert session.scalar(select(Pair.judgment_count).where(Pair.id == shown.pair_id)) == 1
    # The second annotator's lease on the filled pair: refused, nothing of theirs is left.
    with transaction(workspace.sessions) as session:
        session.add(
            PairLease(
                pair_id=shown.pair_id,
                annotator_id=second,
                left_sample="A",
                expires_at=utcnow() + timedelta(seconds=60),
            )
        )
    with pytest.raises(PairUnavailable):
        submit_judgment(workspace.sessions, second, shown.pair_id, choice="A", left_sample="A")
    with workspace.sessions() as session:
        mine = (PairLease.pair_id == shown.pair_id) & (PairLease.annotator_id == second)
        assert session.scalar(select(PairLease.id).where(mine)) is None
        assert (
            session.scalar(
                select(Judgment.id).where(
                    Judgment.pair_id == shown.pair_id, Judgment.annotator_id == second
                )
            )
            is None
        )
    # Every pooled connection is back in transaction mode: an error rolls the work back.
    for _ in range(workspace.engine.pool.size() + 1):
        with pytest.raises(RuntimeError), transaction(workspace.sessions) as session:
            session.execute(update(Pair).values(judgment_count=99))
            raise RuntimeError("abandon this transaction")
    with workspace.sessions() as session:
        assert 99 not in session.scalars(select(Pair.judgment_count)).all()
