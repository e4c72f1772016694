"""Annotation quality for the lead's quality page: per annotator and per round.

The agreement math is rlhf_train.judgments.agreement's, the same the exporter reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, select

from db.models import Judgment, Pair, Round, User
from rlhf_train.judgments.agreement import (
    CODE,
    count_matrix,
    encode_choices,
    krippendorff_alpha_nominal,
    pairwise_agreement,
    rater_stats,
)


@dataclass(frozen=True)
class AnnotatorQuality:
    name: str
    judgments: int
    median_seconds: float | None
    tie_rate: float
    skip_rate: float
    left_rate: float | None  # share of A/B choices that picked the left side: 0.5 is unbiased
    gold_accuracy: float | None
    agreement_with_majority: float | None


@dataclass(frozen=True)
class RoundQuality:
    number: int
    status: str
    votes: int
    pairs_with_votes: int
    pairwise_agreement: float | None
    krippendorff_alpha: float | None


def _rate(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else 0.0


def quality_report(connection: Connection) -> tuple[list[AnnotatorQuality], list[RoundQuality]]:
    rows = connection.execute(
        select(
            Judgment.pair_id,
            Judgment.annotator_id,
            Judgment.choice,
            Judgment.left_sample,
            Judgment.ms_spent,
            Pair.round_id,
            Pair.gold_choice,
        ).join(Pair, Pair.id == Judgment.pair_id)
    ).all()
    names = dict(connection.execute(select(User.id, User.name)).all())
    rounds = connection.execute(select(Round.id, Round.number, Round.status)).all()
    if not rows:
        return [], [
            RoundQuality(n, s, 0, 0, None, None) for _id, n, s in sorted(rounds, key=lambda r: r[1])
        ]
    pair_ids, raters, choices, left, ms, round_ids, gold = (
        np.array(c, dtype=object) for c in zip(*rows, strict=True)
    )
    raters = raters.astype(np.int64)
    ms = ms.astype(np.int64)
    round_ids = round_ids.astype(np.int64)
    values = encode_choices(choices)
    votes = values >= 0
    unique_pairs, items = np.unique(pair_ids.astype(np.int64), return_inverse=True)
    pair_gold = np.full(len(unique_pairs), -1, dtype=np.int64)
    pair_gold[items] = [CODE.get(g, -1) for g in gold]
    counts = count_matrix(items[votes], values[votes], len(unique_pairs))
    stats = rater_stats(items[votes], raters[votes], values[votes], counts, pair_gold)
    annotators = []
    for rater in np.unique(raters):
        mine = raters == rater
        decided = mine & np.isin(choices, ["A", "B"])
        voted = stats.get(int(rater))
        annotators.append(
            AnnotatorQuality(
                name=names.get(int(rater), str(rater)),
                judgments=int(mine.sum()),
                median_seconds=float(np.median(ms[mine]) / 1000) if mine.any() else None,
                tie_rate=_rate(choices[mine] == "tie"),
                skip_rate=_rate(choices[mine] == "skip"),
                left_rate=_rate(choices[decided] == left[decided]) if decided.any() else None,
                gold_accuracy=voted.gold_accuracy if voted else None,
                agreement_with_majority=voted.agreement_with_majority if voted else None,
            )
        )
    per_round = []
    for round_id, number, status in sorted(rounds, key=lambda r: r[1]):
        in_round = votes & (round_ids == round_id)
        matrix = count_matrix(items[in_round], values[in_round], len(unique_pairs))
        per_round.append(
            RoundQuality(
                number=number,
                status=status,
                votes=int(in_round.sum()),
                pairs_with_votes=int((matrix.sum(axis=1) > 0).sum()),
                pairwise_agreement=pairwise_agreement(matrix),
                krippendorff_alpha=krippendorff_alpha_nominal(matrix),
            )
        )
    return sorted(annotators, key=lambda a: a.name), per_round
