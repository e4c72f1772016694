"""Ranking tasks in the database, on SQLite and PostgreSQL: one judgment per (task,
annotator) holding the whole order, the order shown kept on the lease, overlap exact
under concurrent rankers, undo, gold, and the bad rankings refused."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_factory, transaction
from db.errors import UserError
from db.judgments import (
    PairUnavailable,
    fetch_next_pair,
    next_pair,
    record_judgment,
    submit_judgment,
    undo_last,
)
from db.models import Judgment, Pair, PairLease
from db.ranking import normalize_ranking, set_gold_ranking, task_sample_ids
from migrations.runner import upgrade
from tests.ranking_fixtures import ranking_round


@pytest.fixture
def sessions(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def _next(sessions, user: int, seed: int = 0):
    with transaction(sessions) as session:
        return next_pair(session, user, rng=random.Random(seed))


def _rank(sessions, user: int, task: int, ranking, shown) -> int:
    with transaction(sessions) as session:
        return record_judgment(
            session,
            user,
            task,
            choice="ranking",
            left_sample="A",
            ranking=ranking,
            display_order=shown,
            ms_spent=1234,
        )


def test_a_task_shows_k_responses_in_a_kept_order_and_stores_one_ranking(sessions) -> None:
    (ann, _other), _ = ranking_round(sessions, k=4, tasks=1)
    first = _next(sessions, ann, seed=1)
    assert first.kind == "ranking" and len(first.responses) == 4
    shown = [sample for sample, _text in first.responses]
    with sessions() as session:
        assert sorted(shown) == sorted(task_sample_ids(session, first.pair_id))
    # A reload (another draw of the page's rng) shows the same order: it is on the lease.
    again = _next(sessions, ann, seed=99)
    assert [s for s, _ in again.responses] == shown
    ranking = [[shown[2]], [shown[0], shown[3]], [shown[1]]]
    judgment = _rank(sessions, ann, first.pair_id, ranking, shown)
    # A double submit is the same judgment, counted once.
    assert _rank(sessions, ann, first.pair_id, ranking, shown) == judgment
    with sessions() as session:
        row = session.get(Judgment, judgment)
        assert row.choice == "ranking"
        assert row.ranking == [sorted(group) for group in ranking]
        assert row.display_order == shown
        assert row.ms_spent == 1234
        assert session.get(Pair, first.pair_id).judgment_count == 1
        assert session.scalar(select(func.count()).select_from(PairLease)) == 0


@pytest.mark.parametrize(
    ("ranking", "message"),
    [
        (lambda s: [[s[0]], [s[1]], [s[2]]], "1 of them have no place yet"),
        (lambda s: [[s[0]], [s[0]], [s[1]], [s[2]], [s[3]]], "twice"),
        (lambda s: [[s[0]], [s[1]], [s[2]], [s[3]], [999_999]], "and only those"),
        (lambda s: [s[0], s[1]], "non-empty groups"),
        (lambda s: None, "order every response"),
    ],
)
def test_bad_rankings_are_refused_and_store_nothing(sessions, ranking, message) -> None:
    (ann, _), _ = ranking_round(sessions, k=4, tasks=1)
    task = _next(sessions, ann)
    shown = [s for s, _ in task.responses]
    with pytest.raises(UserError, match=message):
        _rank(sessions, ann, task.pair_id, ranking(shown), shown)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Judgment)) == 0
        assert session.get(Pair, task.pair_id).judgment_count == 0


def test_pairwise_choices_are_refused_on_a_task_and_a_ranking_on_a_pair(sessions) -> None:
    (ann, _), _ = ranking_round(sessions, k=3, tasks=1)
    task = _next(sessions, ann)
    with (
        pytest.raises(UserError, match="submit choice 'ranking' or 'skip'"),
        transaction(sessions) as session,
    ):
        record_judgment(session, ann, task.pair_id, choice="A", left_sample="A")
    # A skip is stored with the order shown and no ranking, and does not count.
    with transaction(sessions) as session:
        shown = [s for s, _ in task.responses]
        record_judgment(
            session, ann, task.pair_id, choice="skip", left_sample="A", display_order=shown
        )
    with sessions() as session:
        assert session.get(Pair, task.pair_id).judgment_count == 0


def test_the_page_entry_points_store_a_tasks_skip_and_ranking(sessions) -> None:
    """Through what the page calls (on PostgreSQL the autocommitted first-vote path,
    which hands a task on to record_judgment), with the keywords the rank view sends."""
    (ann, other), _ = ranking_round(sessions, k=3, tasks=2)
    for user, choice in ((ann, "skip"), (other, "ranking")):
        task = fetch_next_pair(sessions, user, rng=random.Random(user))
        shown = [s for s, _ in task.responses]
        extra = {"ranking": [[shown[1]], [shown[0]], [shown[2]]]} if choice == "ranking" else {}
        submit_judgment(
            sessions,
            user,
            task.pair_id,
            choice=choice,
            left_sample="A",
            display_order=shown,
            rationale="",
            flags={},
            ms_spent=900,
            **extra,
        )
        with sessions() as session:
            stored = session.scalars(
                select(Judgment).where(
                    Judgment.pair_id == task.pair_id, Judgment.annotator_id == user
                )
            ).one()
            assert (stored.choice, stored.display_order) == (choice, shown)
            assert session.get(Pair, task.pair_id).judgment_count == (choice == "ranking")


def test_undo_leases_the_task_back_in_the_same_order(sessions) -> None:
    (ann, _), _ = ranking_round(sessions, k=5, tasks=2)
    task = _next(sessions, ann, seed=3)
    shown = [s for s, _ in task.responses]
    _rank(sessions, ann, task.pair_id, [[s] for s in shown], shown)
    with transaction(sessions) as session:
        assert undo_last(session, ann) == task.pair_id
    back = _next(sessions, ann, seed=42)
    assert back.pair_id == task.pair_id
    assert [s for s, _ in back.responses] == shown
    with sessions() as session:
        assert session.get(Pair, task.pair_id).judgment_count == 0


def test_gold_tasks_take_a_known_best_or_a_full_order(sessions) -> None:
    (ann, _), _ = ranking_round(sessions, k=3, tasks=2)
    with transaction(sessions) as session:
        first, second = session.scalars(select(Pair.id).order_by(Pair.id)).all()
        ids = task_sample_ids(session, first)
        set_gold_ranking(session, first, [[ids[1]]])
        set_gold_ranking(session, second, [[s] for s in task_sample_ids(session, second)])
        with pytest.raises(UserError, match="not one of this task's responses"):
            set_gold_ranking(session, first, [[123456]])
    with sessions() as session:
        assert session.get(Pair, first).gold_ranking == [[ids[1]]]
        assert session.get(Pair, first).gold_choice == "ranking"


def test_overlap_is_exact_with_concurrent_rankers(sessions) -> None:
    """Eight threads rank as fast as they can; no task gets more than its overlap, every
    task gets exactly it, and every stored count equals its rows."""
    users, _ = ranking_round(sessions, k=4, tasks=6, overlap=3, annotators=8)
    refused: list[int] = []

    def work(user: int) -> None:
        rng = random.Random(user)
        while True:
            with transaction(sessions) as session:
                task = next_pair(session, user, rng=rng)
            if task is None:
                return
            shown = [s for s, _ in task.responses]
            order = shown[:]
            rng.shuffle(order)
            try:
                _rank(sessions, user, task.pair_id, [[s] for s in order], shown)
            except PairUnavailable:
                refused.append(user)

    threads = [threading.Thread(target=work, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    with sessions() as session:
        grouped = select(Judgment.pair_id, func.count()).group_by(Judgment.pair_id)
        per_task = {task: n for task, n in session.execute(grouped)}
        counts = {task: n for task, n in session.execute(select(Pair.id, Pair.judgment_count))}
    assert sorted(per_task.values()) == [3] * 6
    assert per_task == counts


def test_normalize_ranking_sorts_ties_within_their_group() -> None:
    assert normalize_ranking([[3], [2, 1]], [1, 2, 3]) == [[3], [1, 2]]


def test_a_populated_0008_database_upgrades_with_its_rows(db_url: str) -> None:
    """Rounds, pairs, judgments and leases stored before revision 0009 keep their rows:
    the rounds become pairwise, their judgments hold no ranking."""
    from tests.test_migrations import _differences, _upgrade_from

    engine = make_engine(db_url)
    _upgrade_from(
        engine,
        "0008",
        "INSERT INTO judgments (pair_id, annotator_id, choice, rationale, flags, left_sample, "
        "ms_spent, created_at) VALUES (1, 1, 'A', '', '{}', 'B', 5, '2026-01-01')",
        "INSERT INTO pair_leases (id, pair_id, annotator_id, expires_at, left_sample) VALUES "
        "(1, 1, 2, '2026-01-01', 'A')",
    )
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT kind, rank_k FROM rounds").one() == (
            "pairwise",
            None,
        )
        assert connection.exec_driver_sql(
            "SELECT choice, left_sample, ranking FROM judgments"
        ).one() == ("A", "B", None)
        assert connection.exec_driver_sql("SELECT count(*) FROM pair_leases").scalar() == 1
    assert _differences(engine) == []
    engine.dispose()
