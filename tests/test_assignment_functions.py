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
    locking,
    next_pair,
    record_judgment,
    set_locking,
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


def _script(workspace, annotators: list[int], steps: int) -> list[tuple]:
    """Annotators taking turns at random: fetch, judge (any choice, now and then twice or
    after their lease expired), undo now and then; every outcome in order."""
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
            with transaction(workspace.sessions) as session:
                got = next_pair(session, user, now=now, rng=pair_rngs[user])
            shown[user] = None if got is None else (got.pair_id, got.left_sample)
            trace.append((user, "next", shown[user]))
            continue
        pair_id, side = shown[user]
        choice = rng.choice(CHOICES)
        for _repeat in range(2 if rng.random() < 0.15 else 1):
            try:
                with transaction(workspace.sessions) as session:
                    record_judgment(session, user, pair_id, choice=choice, left_sample=side)
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


def test_the_database_functions_decide_as_the_python_path(pg_workspace, tiny_policy) -> None:
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
        traces[name] = _script(workspace, annotators, steps=260)
    python, database = traces["global"], traces["rows"]
    kinds = {entry[1] for entry in python if isinstance(entry[1], str)}
    assert {"next", "judged", "refused", "undo"} <= kinds  # the script reached every case
    assert any(entry[1] == "next" and entry[2] is None for entry in python)  # ran dry too
    assert database == python
