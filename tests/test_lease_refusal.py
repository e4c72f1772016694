"""Leases on SQLite and PostgreSQL: a pair that others filled is not offered again (issue 13,
item 3), and a lease keeps the side each sample is shown on (item 4)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from db.engine import transaction
from db.judgments import (
    PairUnavailable,
    next_pair,
    release_lease,
    submit_judgment,
    undo_last,
)
from db.models import Pair, PairLease
from db.round_admin import set_gold, update_settings
from db.users import create_user
from rlhf_train.rounds.generate import generate_round
from tests.helpers import round_request, store_prompts


@pytest.fixture
def one_pair_each(workspace, tiny_policy):
    """Round 1 with 2 pairs and overlap 1, and annotators ann, bob and cat."""
    store_prompts(workspace, ["Prompt 0", "Prompt 1"])
    generate_round(workspace, round_request(tiny_policy, n_prompts=2), False)
    with transaction(workspace.sessions) as session:
        update_settings(session, 1, overlap=1, gold_rate=0.0, guidelines="")
        users = [create_user(session, name, "annotator", "password-123").id for name in "abc"]
    return workspace, users


def _next(workspace, user: int, **kwargs):
    with transaction(workspace.sessions) as session:
        return next_pair(session, user, **kwargs)


def _submit(workspace, user: int, pair_id: int, choice: str = "A", left: str = "A") -> None:
    submit_judgment(workspace.sessions, user, pair_id, choice=choice, left_sample=left)


def _undo(workspace, user: int) -> int | None:
    with transaction(workspace.sessions) as session:
        return undo_last(session, user)


def _leases(workspace, user: int) -> list[int]:
    with workspace.sessions() as session:
        return list(
            session.scalars(select(PairLease.pair_id).where(PairLease.annotator_id == user))
        )


def _judgeable(workspace, user: int) -> set[int]:
    """The pairs the annotator is offered while judging everything offered to them."""
    offered = set()
    while (assignment := _next(workspace, user)) is not None:
        assert assignment.pair_id not in offered, "the same pair was offered again"
        offered.add(assignment.pair_id)
        _submit(workspace, user, assignment.pair_id)
    return offered


def test_undoing_a_skip_on_a_pair_others_filled_does_not_get_stuck(one_pair_each) -> None:
    workspace, (ann, bob, _) = one_pair_each
    full = _next(workspace, ann).pair_id
    _submit(workspace, ann, full, "skip")
    assert _next(workspace, bob).pair_id == full  # a skip leaves the pair open
    _submit(workspace, bob, full, "B")
    assert _undo(workspace, ann) == full  # leases the pair back to ann, but it is full now
    # ann is not shown the full pair again (before: for the lease's 10 minutes)...
    assert full not in _judgeable(workspace, ann)
    assert full not in _leases(workspace, ann)


def test_a_skip_turned_into_a_vote_elsewhere_frees_the_lease_holder(one_pair_each) -> None:
    workspace, (ann, bob, _) = one_pair_each
    contested = _next(workspace, bob).pair_id
    _submit(workspace, bob, contested, "skip")
    assert _next(workspace, ann).pair_id == contested  # ann holds it now
    _submit(workspace, bob, contested, "A")  # bob's second tab turns the skip into a vote
    assert _next(workspace, ann).pair_id != contested
    assert contested not in _leases(workspace, ann)


def test_a_refused_submit_ends_the_lease(one_pair_each) -> None:
    """The page's submit: its transaction rolls back on refusal, the lease still ends."""
    workspace, (ann, bob, _) = one_pair_each
    contested = _next(workspace, bob).pair_id
    _submit(workspace, bob, contested, "skip")
    assert _next(workspace, ann).pair_id == contested
    _submit(workspace, bob, contested, "A")
    with pytest.raises(PairUnavailable, match="completed this pair meanwhile"):
        _submit(workspace, ann, contested, "B")
    assert _leases(workspace, ann) == []
    with workspace.sessions() as session:
        assert session.get(Pair, contested).judgment_count == 1  # bob's vote only


def test_the_earliest_lease_keeps_an_oversubscribed_pair(one_pair_each) -> None:
    """An undo can lease a pair to more annotators than it has room for: the one who
    held it first keeps it, the others move on (nobody is left waiting for an expiry)."""
    workspace, (ann, bob, _) = one_pair_each
    contested = _next(workspace, ann).pair_id
    _submit(workspace, ann, contested, "skip")
    assert _next(workspace, bob).pair_id == contested
    _undo(workspace, ann)  # ann leases it back: two leases, room for one judgment
    assert _next(workspace, bob).pair_id == contested
    assert _next(workspace, ann).pair_id != contested
    _submit(workspace, bob, contested, "A")  # bob's judgment is accepted


def test_held_gold_pairs_stay_held(one_pair_each) -> None:
    workspace, (ann, bob, cat) = one_pair_each
    with workspace.sessions() as session:
        gold = session.scalar(select(Pair.id).order_by(Pair.id))
    with transaction(workspace.sessions) as session:
        set_gold(session, gold, "A")
        update_settings(session, 1, overlap=1, gold_rate=1.0, guidelines="")
    for user in (ann, bob):
        _submit(workspace, user, gold)  # more judgments than the overlap: gold is for all
    assert _next(workspace, cat).pair_id == gold
    assert _next(workspace, cat).pair_id == gold


def test_release_lease_frees_the_pair_for_others(one_pair_each) -> None:
    workspace, (ann, bob, cat) = one_pair_each
    first = _next(workspace, ann).pair_id
    second = _next(workspace, bob).pair_id
    assert _next(workspace, cat) is None  # both pairs are held
    with transaction(workspace.sessions) as session:
        release_lease(session, ann, first)
    assert _next(workspace, cat).pair_id == first != second


def test_a_lease_keeps_its_side_through_reloads_and_undo(one_pair_each) -> None:
    workspace, (ann, _, _) = one_pair_each
    shown = _next(workspace, ann, rng=random.Random(0))
    assert shown.left_sample in ("A", "B")
    for seed in range(1, 9):  # a reload or a second tab draws again, and must not matter
        again = _next(workspace, ann, rng=random.Random(seed))
        assert (again.pair_id, again.left_sample) == (shown.pair_id, shown.left_sample)
    _submit(workspace, ann, shown.pair_id, "A", left=shown.left_sample)
    for seed in range(9):
        _next(workspace, ann, rng=random.Random(seed))  # the next pair, drawn afresh
        assert _undo(workspace, ann) == shown.pair_id
        back = _next(workspace, ann, rng=random.Random(seed))
        assert (back.pair_id, back.left_sample) == (shown.pair_id, shown.left_sample)
        _submit(workspace, ann, shown.pair_id, "A", left=shown.left_sample)


def test_new_leases_draw_both_sides(one_pair_each) -> None:
    workspace, (ann, _, _) = one_pair_each
    sides = set()
    for seed in range(20):
        assignment = _next(workspace, ann, rng=random.Random(seed))
        sides.add(assignment.left_sample)
        with transaction(workspace.sessions) as session:
            release_lease(session, ann, assignment.pair_id)  # the next one is a new lease
    assert sides == {"A", "B"}
