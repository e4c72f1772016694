"""Ranking tasks: a round of kind "ranking" shows K responses (3 to 6) and takes one
judgment with their whole order.

A task reuses a `pairs` row (sample_a and sample_b are its first two responses), so that
the judgment counts, overlap, leases, gold and the assignment locks of db.judgments apply
to it unchanged; `task_samples` lists all K. A ranking is a list of groups of sample ids,
best first; the responses in one group are tied: [[12], [15, 11], [14]].
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import RANK_SIZES, Pair, PairLease, Round, Sample, TaskSample
from db.text import storable

_T, _L = TaskSample.__table__, PairLease.__table__


@dataclass(frozen=True)
class NewTask:
    """Indices into the list of samples given with it, in the task's stored order."""

    samples: tuple[int, ...]
    strategy: str = "random"


def check_rank_k(k: int) -> int:
    """K itself, if a ranking round may have K responses per task."""
    low, high = RANK_SIZES
    if not low <= k <= high:
        raise UserError(f"--rank is {k}; a ranking task shows {low} to {high} responses.")
    return k


def normalize_ranking(groups: Any, sample_ids: Sequence[int]) -> list[list[int]]:
    """`groups` as a stored ranking (lists of ints, ties sorted within their group), if it
    orders exactly the task's samples, each once; else one sentence saying what is wrong."""
    if not isinstance(groups, list | tuple) or not all(
        isinstance(group, list | tuple) and group for group in groups
    ):
        raise UserError("A ranking is a list of non-empty groups of response ids, best first.")
    flat = [int(sample) for group in groups for sample in group]
    wanted = set(sample_ids)
    if len(flat) != len(set(flat)):
        raise UserError("The ranking names a response twice; each response takes one place.")
    missing = len(wanted - set(flat))
    if missing or set(flat) - wanted:
        raise UserError(
            f"The ranking must order all {len(wanted)} responses of the task"
            + (f"; {missing} of them have no place yet." if missing else ", and only those.")
        )
    return [sorted(int(sample) for sample in group) for group in groups]


def normalize_gold(groups: Any, sample_ids: Sequence[int]) -> list[list[int]]:
    """A gold ranking: the full known order, or [[best]] when only the best is known."""
    if (
        isinstance(groups, list | tuple)
        and len(groups) == 1
        and isinstance(groups[0], list | tuple)
        and len(groups[0]) == 1
    ):
        best = int(groups[0][0])
        if best not in set(sample_ids):
            raise UserError(f"Response #{best} is not one of this task's responses.")
        return [[best]]
    return normalize_ranking(groups, sample_ids)


def task_sample_ids(connection: Connection | Session, pair_id: int) -> list[int]:
    """The task's sample ids by position; empty for a pairwise pair."""
    query = select(_T.c.sample_id).where(_T.c.pair_id == pair_id).order_by(_T.c.position)
    return list(connection.execute(query).scalars())


def task_texts(connection: Connection, pair_id: int) -> dict[int, str]:
    """Sample id -> text of the task's responses."""
    query = (
        select(Sample.id, Sample.text)
        .join(TaskSample, TaskSample.sample_id == Sample.id)
        .where(TaskSample.pair_id == pair_id)
    )
    return dict(connection.execute(query).tuples().all())


def shown_order(
    connection: Connection, pair_id: int, annotator_id: int, rng: random.Random
) -> list[int]:
    """The order this annotator sees the task's responses in: the one stored on their
    lease, or (first showing) a fresh draw, stored on the lease so that a reload, a second
    tab or an undo shows the same order."""
    lease = (_L.c.pair_id == pair_id) & (_L.c.annotator_id == annotator_id)
    stored = connection.execute(select(_L.c.display_order).where(lease)).scalar()
    if stored:
        return [int(sample) for sample in stored]
    order = task_sample_ids(connection, pair_id)
    rng.shuffle(order)
    connection.execute(update(_L).where(lease).values(display_order=order))
    return order


def add_tasks(session: Session, round_: Round, samples: list[Any], tasks: list[NewTask]) -> None:
    """Store a chunk's samples (db.rounds.NewSample) and its ranking tasks."""
    rows = [
        Sample(round_id=round_.id, **(vars(sample) | {"text": storable(sample.text)}))
        for sample in samples
    ]
    session.add_all(rows)
    session.flush()
    pairs = [
        Pair(
            round_id=round_.id,
            prompt_id=rows[task.samples[0]].prompt_id,
            sample_a_id=rows[task.samples[0]].id,
            sample_b_id=rows[task.samples[1]].id,
            strategy=task.strategy,
        )
        for task in tasks
    ]
    session.add_all(pairs)
    session.flush()
    session.add_all(
        TaskSample(pair_id=pair.id, position=position, sample_id=rows[index].id)
        for pair, task in zip(pairs, tasks, strict=True)
        for position, index in enumerate(task.samples)
    )
    session.flush()


def set_gold_ranking(session: Session, pair_id: int, groups: Any | None) -> Pair:
    """Make a ranking task gold with its known order (or known best, [[id]]), or ordinary
    again (None)."""
    pair = session.get(Pair, pair_id)
    ids = task_sample_ids(session, pair_id) if pair is not None else []
    if not ids:
        raise UserError(f"There is no ranking task #{pair_id}; check the number.")
    if groups is None:
        pair.gold_choice, pair.gold_ranking = None, None
    else:
        pair.gold_choice, pair.gold_ranking = "ranking", normalize_gold(groups, ids)
    session.flush()
    return pair


def parse_order(text: str) -> list[list[int]] | None:
    """A lead's typed order, "12 > 15 = 11 > 14" (sample ids best first, = joins ties),
    as groups; one id alone names only the best; empty text is None (not gold)."""
    if not text.strip():
        return None
    try:
        return [[int(item) for item in group.split("=")] for group in text.split(">")]
    except ValueError:
        raise UserError(
            f"{text!r} is not an order; write sample ids best first, like 12 > 15 = 11 > 14."
        ) from None
