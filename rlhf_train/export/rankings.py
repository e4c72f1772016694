"""Rankings at export: each ranking of K responses becomes its K(K-1)/2 ordered pairs,
which are then aggregated, filtered and written exactly like the votes on pairs.

A ranking task (db.ranking) is replaced in the pair table by one derived pair per two of
its responses (in stored position order: A before B); every ranking on the task gives one
vote on each: A or B for the better placed response, with strength the distance of their
places (1, 2, 3 and more count 3), or "tie" when they share a group. So the majority
rule, its agreement, the `--ties` option and `margin` (agreement x mean strength) apply
to them unchanged, and no response is ever paired with itself. A gold task's derived
pairs are gold where the known order decides them: both responses placed in a known full
order, or one of them the known best.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from db.models import Judgment, Pair, Round, TaskSample
from rlhf_train.export.query import PairTable, RoundSelection, VoteTable
from rlhf_train.judgments.agreement import CODE, encode_choices, rank_positions

MAX_STRENGTH = 3


@dataclass(frozen=True)
class Rankings:
    """The ranking tasks of the selected rounds and the rankings on them."""

    samples: dict[int, list[int]]  # task id -> sample ids by position
    gold: dict[int, list[list[int]]]  # task id -> known order (or [[best]])
    judgments: list[tuple[int, int, list[list[int]]]]  # (task, annotator, ranking)


@dataclass(frozen=True)
class Ballots:
    """Votes ready to aggregate: items index the returned pair table."""

    pairs: PairTable
    items: np.ndarray
    raters: np.ndarray
    values: np.ndarray
    strengths: np.ndarray
    counts: dict[str, int]


def load_rankings(connection: Connection, rounds: RoundSelection) -> Rankings:
    tasks = (
        select(TaskSample.pair_id, TaskSample.sample_id, Pair.gold_ranking)
        .join(Pair, Pair.id == TaskSample.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(Pair.round_id.in_(rounds.ids), Round.kind == "ranking")
        .order_by(TaskSample.pair_id, TaskSample.position)
    )
    samples: dict[int, list[int]] = {}
    gold: dict[int, list[list[int]]] = {}
    for task, sample, known in connection.execute(tasks):
        samples.setdefault(task, []).append(sample)
        if known:
            gold[task] = known
    judgments = (
        select(Judgment.pair_id, Judgment.annotator_id, Judgment.ranking)
        .join(Pair, Pair.id == Judgment.pair_id)
        .where(Pair.round_id.in_(rounds.ids), Judgment.choice == "ranking")
        .order_by(Judgment.id)
    )
    found = [(t, a, r) for t, a, r in connection.execute(judgments) if t in samples]
    return Rankings(samples, gold, found)


def pair_vote(places: dict[int, int], a: int, b: int) -> tuple[str, int]:
    """The vote a ranking gives the pair (a, b), and its strength (0 for a tie)."""
    gap = places[b] - places[a]
    if gap == 0:
        return "tie", 0
    return ("A" if gap > 0 else "B"), min(abs(gap), MAX_STRENGTH)


def _gold_code(known: list[list[int]] | None, a: int, b: int) -> int:
    if not known:
        return -1
    places = rank_positions(known)
    if a in places and b in places:
        return CODE[pair_vote(places, a, b)[0]]
    if a in places or b in places:  # only the best is known, and it is one of them
        return CODE["A" if a in places else "B"]
    return -1


def ballots(pairs: PairTable, votes: VoteTable, rankings: Rankings) -> Ballots:
    """The votes on pairs and those the rankings give, on one table of pairs."""
    is_task = np.isin(pairs.ids, list(rankings.samples))
    base = PairTable(*(getattr(pairs, name)[~is_task] for name in _PAIR_FIELDS))
    values = encode_choices(votes.choices)
    on_task = np.isin(votes.pair_ids, list(rankings.samples))
    is_vote = (values >= 0) & ~on_task
    counts = {
        "skips": int(((values < 0) & (votes.choices != "ranking")).sum()),
        "ranking_tasks": len(rankings.samples),
        "rankings": len(rankings.judgments),
    }
    derived: dict[tuple[int, int, int], int] = {}
    columns: dict[str, list[Any]] = {name: [] for name in _PAIR_FIELDS}
    prompt_of = dict(zip(pairs.ids.tolist(), pairs.prompt_ids.tolist(), strict=True))
    round_of = dict(zip(pairs.ids.tolist(), pairs.round_numbers.tolist(), strict=True))
    for task, samples in rankings.samples.items():
        for a, b in combinations(samples, 2):
            derived[(task, a, b)] = len(base.ids) + len(derived)
            for name, value in zip(
                _PAIR_FIELDS,
                (
                    task,
                    round_of[task],
                    prompt_of[task],
                    a,
                    b,
                    _gold_code(rankings.gold.get(task), a, b),
                ),
                strict=True,
            ):
                columns[name].append(value)
    new_items, new_raters, new_values, new_strengths = [], [], [], []
    for task, annotator, ranking in rankings.judgments:
        places = rank_positions(ranking)
        for a, b in combinations(rankings.samples[task], 2):
            choice, strength = pair_vote(places, a, b)
            new_items.append(derived[(task, a, b)])
            new_raters.append(annotator)
            new_values.append(CODE[choice])
            new_strengths.append(strength)
    counts["ranking_pairs"] = len(new_items)
    table = PairTable(
        *(
            np.concatenate([getattr(base, name), np.array(columns[name], dtype=dtype)])
            for name, dtype in zip(_PAIR_FIELDS, _DTYPES, strict=True)
        )
    )
    return Ballots(
        pairs=table,
        items=np.concatenate(
            [np.searchsorted(base.ids, votes.pair_ids[is_vote]), np.array(new_items, np.int64)]
        ).astype(np.int64),
        raters=np.concatenate([votes.annotator_ids[is_vote], np.array(new_raters, np.int64)]),
        values=np.concatenate([values[is_vote], np.array(new_values, np.int8)]),
        strengths=np.concatenate([votes.strengths[is_vote], np.array(new_strengths, np.int64)]),
        counts=counts,
    )


def rankings_by_task(rankings: Rankings) -> dict[int, list[list[list[int]]]]:
    """Task id -> the rankings on it (for the mean Kendall tau)."""
    grouped: dict[int, list[list[list[int]]]] = {}
    for task, _annotator, ranking in rankings.judgments:
        grouped.setdefault(task, []).append(ranking)
    return grouped


_PAIR_FIELDS = ("ids", "round_numbers", "prompt_ids", "sample_a", "sample_b", "gold")
_DTYPES = (np.int64, np.int64, np.int64, np.int64, np.int64, np.int8)
