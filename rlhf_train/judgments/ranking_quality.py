"""Quality of ranking judgments (db.ranking), for the Quality page: per round the mean
Kendall tau-b between annotators who ranked the same task, per annotator their scores on
gold tasks (the known best placed alone on top; tau-b against a known full order).

Per pair agreement is the exporter's, over the pairs the rankings give
(rlhf_train/export/rankings.py); this module measures whole orders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, select

from db.models import Judgment, Pair, Round, User
from rlhf_train.judgments.agreement import kendall_tau_b, mean_kendall_tau


@dataclass(frozen=True)
class RoundRankings:
    number: int
    rank_k: int
    rankings: int
    tasks_ranked_twice: int  # tasks with two rankings or more: what the tau is over
    mean_kendall_tau: float | None


@dataclass(frozen=True)
class AnnotatorRankings:
    name: str
    rankings: int
    gold_tasks: int
    gold_best_agreement: float | None  # share whose top place is the gold's top place
    gold_kendall_tau: float | None  # mean tau-b against gold tasks of a known full order


def ranking_quality(
    connection: Connection,
) -> tuple[list[RoundRankings], list[AnnotatorRankings]]:
    rows = connection.execute(
        select(
            Round.number,
            Round.rank_k,
            Judgment.pair_id,
            Judgment.annotator_id,
            Judgment.ranking,
            Pair.gold_ranking,
        )
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(Judgment.choice == "ranking", Round.kind == "ranking")
        .order_by(Round.number, Judgment.id)
    ).all()
    if not rows:
        return [], []
    names = dict(connection.execute(select(User.id, User.name)).tuples().all())
    rounds: list[RoundRankings] = []
    for number in sorted({row.number for row in rows}):
        mine = [row for row in rows if row.number == number]
        by_task: dict[int, list] = {}
        for row in mine:
            by_task.setdefault(row.pair_id, []).append(row.ranking)
        rounds.append(
            RoundRankings(
                number=number,
                rank_k=mine[0].rank_k,
                rankings=len(mine),
                tasks_ranked_twice=sum(len(r) >= 2 for r in by_task.values()),
                mean_kendall_tau=mean_kendall_tau(by_task),
            )
        )
    annotators = []
    for annotator in sorted({row.annotator_id for row in rows}, key=lambda a: names.get(a, "")):
        mine = [row for row in rows if row.annotator_id == annotator]
        gold = [row for row in mine if row.gold_ranking]
        best = [sorted(row.ranking[0]) == sorted(row.gold_ranking[0]) for row in gold]
        taus = [
            tau
            for row in gold
            if len(row.gold_ranking) > 1 or len(row.gold_ranking[0]) > 1
            if (tau := kendall_tau_b(row.ranking, row.gold_ranking)) is not None
        ]
        annotators.append(
            AnnotatorRankings(
                name=names.get(annotator, str(annotator)),
                rankings=len(mine),
                gold_tasks=len(gold),
                gold_best_agreement=float(np.mean(best)) if best else None,
                gold_kendall_tau=float(np.mean(taus)) if taus else None,
            )
        )
    return rounds, annotators
