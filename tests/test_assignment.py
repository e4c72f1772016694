"""Assignment, judgments, undo and progress on SQLite and PostgreSQL: the functions the
annotate page calls."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.engine import transaction
from db.judgments import (
    LEASE_SECONDS,
    PairUnavailable,
    next_pair,
    progress,
    record_judgment,
    undo_last,
)
from db.models import Judgment, Pair, PairLease, Round, utcnow
from db.round_admin import set_gold, set_status, update_settings
from db.users import create_user
from rlhf_train.rounds.generate import generate_round
from tests.helpers import round_request, store_prompts


@pytest.fixture
def round_of(workspace, tiny_policy):
    """A function making round 1 with `pairs` pairs and the given overlap; returns the
    workspace and a function creating annotators."""

    def make(pairs: int, overlap: int = 2, gold_rate: float = 0.0):
        store_prompts(workspace, [f"Prompt {i}" for i in range(pairs)])
        generate_round(workspace, round_request(tiny_policy, n_prompts=pairs), False)
        with transaction(workspace.sessions) as session:
            update_settings(session, 1, overlap=overlap, gold_rate=gold_rate, guidelines="Be fair.")
            assert session.scalar(select(func.count(Pair.id))) == pairs
        return workspace

    return make


def _users(workspace, *names: str) -> list[int]:
    with transaction(workspace.sessions) as session:
        return [create_user(session, name, "annotator", "password-123").id for name in names]


def _next(workspace, user: int, **kwargs):
    with transaction(workspace.sessions) as session:
        return next_pair(session, user, **kwargs)


def _judge(workspace, user: int, pair_id: int, choice: str = "A", **kwargs):
    with transaction(workspace.sessions) as session:
        return record_judgment(session, user, pair_id, choice=choice, left_sample="B", **kwargs)


def _count(workspace, model, *where) -> int:
    with workspace.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_each_annotator_judges_each_pair_once_up_to_the_overlap(round_of) -> None:
    workspace = round_of(pairs=3, overlap=2)
    ann, bob, cat = _users(workspace, "ann", "bob", "cat")
    seen: dict[int, list[int]] = {ann: [], bob: [], cat: []}
    for _ in range(4):
        for user in (ann, bob, cat):
            assignment = _next(workspace, user)
            if assignment is not None:
                assert assignment.guidelines == "Be fair." and assignment.prompt.startswith(
                    "Prompt"
                )
                seen[user].append(assignment.pair_id)
                _judge(workspace, user, assignment.pair_id)
    for pairs in seen.values():
        assert len(pairs) == len(set(pairs))  # never the same pair twice
    assert sum(map(len, seen.values())) == 3 * 2  # every pair exactly `overlap` times
    with workspace.sessions() as session:
        assert set(session.scalars(select(Pair.judgment_count))) == {2}
    assert all(_next(workspace, user) is None for user in (ann, bob, cat))


def test_a_shown_pair_is_held_until_judged_or_expired(round_of) -> None:
    workspace = round_of(pairs=1, overlap=1)
    ann, bob = _users(workspace, "ann", "bob")
    first = _next(workspace, ann)
    assert _next(workspace, ann).pair_id == first.pair_id  # a reload shows the same pair
    assert _next(workspace, bob) is None  # held by ann: bob would over-collect
    later = utcnow() + timedelta(seconds=LEASE_SECONDS + 1)
    assert _next(workspace, bob, now=later).pair_id == first.pair_id  # abandoned tab
    _judge(workspace, bob, first.pair_id)
    with pytest.raises(PairUnavailable, match="completed this pair meanwhile"):
        _judge(workspace, ann, first.pair_id)
    assert _count(workspace, Judgment) == 1


def test_a_refused_first_vote_stores_nothing_even_if_the_caller_commits(round_of) -> None:
    # A first vote inserts its row before the count's conditional update refuses it: the
    # refusal must take the row back itself, not rely on the caller's rollback.
    workspace = round_of(pairs=1, overlap=1)
    ann, bob = _users(workspace, "ann", "bob")
    pair_id = _next(workspace, ann).pair_id
    _judge(workspace, ann, pair_id, "A")
    with workspace.sessions() as session:
        with pytest.raises(PairUnavailable, match="completed this pair meanwhile"):
            record_judgment(session, bob, pair_id, choice="B", left_sample="A")
        session.commit()
    assert _count(workspace, Judgment, Judgment.annotator_id == bob) == 0
    with workspace.sessions() as session:
        assert session.get(Pair, pair_id).judgment_count == 1
    # The same annotator's skip on the full pair is stored (skips do not count), once.
    _judge(workspace, bob, pair_id, "skip")
    _judge(workspace, bob, pair_id, "skip")
    assert _count(workspace, Judgment, Judgment.annotator_id == bob) == 1


def test_resubmitting_updates_the_same_row(round_of) -> None:
    workspace = round_of(pairs=2, overlap=2)
    (ann,) = _users(workspace, "ann")
    pair_id = _next(workspace, ann).pair_id
    _judge(workspace, ann, pair_id, "A", strength=1)
    _judge(workspace, ann, pair_id, "B", strength=3, rationale="second thoughts")
    with workspace.sessions() as session:
        rows = session.scalars(select(Judgment)).all()
        assert [(j.choice, j.strength, j.rationale) for j in rows] == [("B", 3, "second thoughts")]
        assert session.get(Pair, pair_id).judgment_count == 1
        assert session.scalar(select(func.count(PairLease.id))) == 0  # the lease ended
    _judge(workspace, ann, pair_id, "skip")  # a skip does not count toward the overlap
    with workspace.sessions() as session:
        assert session.get(Pair, pair_id).judgment_count == 0


def test_a_skip_turned_into_a_vote_respects_the_overlap(round_of) -> None:
    workspace = round_of(pairs=1, overlap=1)
    ann, bob = _users(workspace, "ann", "bob")
    pair_id = _next(workspace, ann).pair_id
    _judge(workspace, ann, pair_id, "skip")
    _judge(workspace, bob, _next(workspace, bob).pair_id, "A")
    with pytest.raises(PairUnavailable, match="completed this pair meanwhile"):
        _judge(workspace, ann, pair_id, "A")  # a second tab, resubmitting a vote
    with workspace.sessions() as session:
        assert session.get(Pair, pair_id).judgment_count == 1
        assert session.scalar(select(Judgment.choice).where(Judgment.annotator_id == ann)) == "skip"


def test_skipped_pairs_go_to_others(round_of) -> None:
    workspace = round_of(pairs=1, overlap=1)
    ann, bob = _users(workspace, "ann", "bob")
    pair_id = _next(workspace, ann).pair_id
    _judge(workspace, ann, pair_id, "skip")
    assert _next(workspace, ann) is None
    assert _next(workspace, bob).pair_id == pair_id


def test_undo_removes_the_last_judgment_and_shows_the_pair_again(round_of) -> None:
    workspace = round_of(pairs=3, overlap=1)
    (ann,) = _users(workspace, "ann")
    first = _next(workspace, ann).pair_id
    _judge(workspace, ann, first)
    second = _next(workspace, ann).pair_id
    _judge(workspace, ann, second, "B")
    with transaction(workspace.sessions) as session:
        assert undo_last(session, ann) == second
    assert _count(workspace, Judgment) == 1
    assert _next(workspace, ann).pair_id == second
    with workspace.sessions() as session:
        assert session.get(Pair, second).judgment_count == 0


def test_gold_pairs_come_at_the_gold_rate_for_everyone(round_of) -> None:
    workspace = round_of(pairs=6, overlap=1, gold_rate=0.5)
    with workspace.sessions() as session:
        gold_id = session.scalar(select(Pair.id).order_by(Pair.id))
    with transaction(workspace.sessions) as session:
        set_gold(session, gold_id, "A")
    ann, bob = _users(workspace, "ann", "bob")
    for user in (ann, bob):
        got = []
        rng = random.Random(0)
        while (assignment := _next(workspace, user, rng=rng)) is not None:
            got.append(assignment.pair_id)
            _judge(workspace, user, assignment.pair_id)
        assert gold_id in got  # every annotator meets the gold pair, overlap or not
    assert _count(workspace, Judgment, Judgment.pair_id == gold_id) == 2


def test_closed_rounds_take_no_judgments(round_of) -> None:
    workspace = round_of(pairs=2, overlap=1)
    (ann,) = _users(workspace, "ann")
    pair_id = _next(workspace, ann).pair_id
    with transaction(workspace.sessions) as session:
        set_status(session, 1, "closed")
    with pytest.raises(PairUnavailable, match="round is closed"):
        _judge(workspace, ann, pair_id)
    assert _next(workspace, ann) is None


def test_progress(round_of) -> None:
    workspace = round_of(pairs=4, overlap=2)
    ann, bob = _users(workspace, "ann", "bob")
    for user in (ann, ann, bob):
        _judge(workspace, user, _next(workspace, user).pair_id)
    with workspace.sessions() as session:
        mine = progress(session, ann)
        assert (mine.mine_today, mine.round_number, mine.round_done, mine.round_total) == (
            2,
            1,
            3,
            8,
        )
        tomorrow = progress(session, ann, now=utcnow() + timedelta(days=1))
        assert tomorrow.mine_today == 0


def test_concurrent_annotators_never_over_collect(round_of) -> None:
    workspace = round_of(pairs=6, overlap=2)
    users = _users(workspace, *(f"a{i}" for i in range(6)))
    refused = []
    errors = []

    def annotate(user: int) -> None:
        try:
            while (assignment := _next(workspace, user)) is not None:
                try:
                    _judge(workspace, user, assignment.pair_id)
                except PairUnavailable:
                    refused.append(user)
        except Exception as error:  # noqa: BLE001 - reported below, with the thread's user
            errors.append((user, error))

    threads = [threading.Thread(target=annotate, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with workspace.sessions() as session:
        counts = dict(
            session.execute(
                select(Judgment.pair_id, func.count(Judgment.id)).group_by(Judgment.pair_id)
            ).all()
        )
        stored = dict(session.execute(select(Pair.id, Pair.judgment_count)).all())
        overlap = session.scalar(select(Round.overlap))
    assert counts == stored  # the denormalized count matches the rows
    assert set(counts.values()) == {overlap} and len(counts) == 6
