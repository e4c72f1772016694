"""The annotators' cross-policy votes as arrays, for rating policies (ratings.py).

A cross-policy vote is a judgment on a pair whose two samples were written by different
policies, whatever strategy made the pair (new_vs_previous, arena, ...). A or B won, or a
tie (0.5 to each side); both_bad and skips say nothing about which policy is better and
are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Judgment, Model, Pair, Round, Sample
from db.registry import current_policy, lineage
from db.rounds import get_round
from rlhf_train.errors import UserError

OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class PolicyVotes:
    """One entry per vote in each array. names[0] is the starting policy (the anchor that
    fit_leaderboard uses by default); see cross_policy_votes."""

    names: list[str]  # policy names; index i <-> names[i]
    policy_a: np.ndarray  # int, index of the policy of sample A
    policy_b: np.ndarray  # int
    outcome: np.ndarray  # float: 1.0 A won, 0.0 B won, 0.5 tie
    prompt: np.ndarray  # int prompt id: the bootstrap resamples prompts (all their votes)
    length_a: np.ndarray  # float, words of response A
    length_b: np.ndarray  # float
    weight: np.ndarray  # float, 1.0 each (or the annotator's gold accuracy)

    def __len__(self) -> int:
        return len(self.outcome)


def _round_ids(session: Session, rounds: list[int] | None) -> list[int] | None:
    if rounds is None:
        return None
    return [get_round(session, number).id for number in rounds]  # unknown: one sentence


def _gold_accuracy(session: Session) -> dict[int, float]:
    """Annotator id -> share of their gold-pair votes (skips left out) that match the gold
    answer, over every round: gold pairs are few, so one round alone says little."""
    rows = session.execute(
        select(Judgment.annotator_id, Judgment.choice == Pair.gold_choice)
        .join(Pair, Pair.id == Judgment.pair_id)
        # A ranking's gold is an order, not a choice: rankings are scored on the Quality
        # page (judgments/ranking_quality.py), not here.
        .where(Pair.gold_choice.is_not(None), Judgment.choice.not_in(("skip", "ranking")))
    ).all()
    if not rows:
        return {}
    annotators, correct = (np.asarray(column) for column in zip(*rows, strict=True))
    ids, index = np.unique(annotators.astype(np.int64), return_inverse=True)
    right = np.bincount(index, weights=correct.astype(np.float64))
    total = np.bincount(index)
    return {int(i): float(r / t) for i, r, t in zip(ids, right, total, strict=True)}


def _weights(session: Session, annotators: np.ndarray, weigh_by_gold: bool) -> np.ndarray:
    if not weigh_by_gold:
        return np.ones(len(annotators))
    accuracy = _gold_accuracy(session)
    if not accuracy:
        raise UserError(
            "No annotator has judged a gold pair, so votes cannot be weighed by gold accuracy; "
            "leave out the gold weighting or add gold pairs to a round."
        )
    # An annotator without gold votes weighs as much as the average annotator with them:
    # neither trusted nor distrusted.
    neutral = float(np.mean(list(accuracy.values())))
    return np.array([accuracy.get(int(a), neutral) for a in annotators], dtype=np.float64)


def _starting_order(session: Session, policy_ids: list[int]) -> list[int]:
    """policy_ids (ascending) with the starting policy first: the root-most policy of the
    current policy's lineage that was compared, else the oldest registered one."""
    start = policy_ids[0]
    current = current_policy(session)
    if current is not None:
        for model in reversed(lineage(session, current)):  # root first
            if model.id in policy_ids:
                start = model.id
                break
    return [start] + [i for i in policy_ids if i != start]


def _word_counts(session: Session, sample_ids: np.ndarray) -> np.ndarray:
    """Words of each sample, read once per distinct sample (a pair is voted on many times)."""
    unique, index = np.unique(sample_ids, return_inverse=True)
    words: dict[int, int] = {}
    for start in range(0, len(unique), 10_000):  # bounded IN lists on every backend
        chunk = [int(i) for i in unique[start : start + 10_000]]
        for sample_id, text in session.execute(
            select(Sample.id, Sample.text).where(Sample.id.in_(chunk))
        ):
            words[sample_id] = len(text.split())
    counts = np.array([words[int(i)] for i in unique], dtype=np.float64)
    return counts[index]


def cross_policy_votes(
    session: Session, rounds: list[int] | None = None, weigh_by_gold: bool = False
) -> PolicyVotes:
    """Every A/B/tie judgment on a pair of samples by two different policies, in `rounds`
    (round numbers; None: every round). An unknown round number is a UserError.
    With weigh_by_gold each vote weighs its annotator's gold accuracy."""
    sample_a, sample_b = aliased(Sample), aliased(Sample)
    query = (
        select(
            sample_a.policy_id,
            sample_b.policy_id,
            Judgment.choice,
            Pair.prompt_id,
            Pair.sample_a_id,
            Pair.sample_b_id,
            Judgment.annotator_id,
        )
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(sample_a, sample_a.id == Pair.sample_a_id)
        .join(sample_b, sample_b.id == Pair.sample_b_id)
        .where(sample_a.policy_id != sample_b.policy_id)
        .where(Judgment.choice.in_(tuple(OUTCOME)))
        .order_by(Judgment.id)
    )
    round_ids = _round_ids(session, rounds)
    if round_ids is not None:
        query = query.join(Round, Round.id == Pair.round_id).where(Round.id.in_(round_ids))
    rows = session.execute(query).all()
    if not rows:
        return _empty()
    columns = [np.asarray(column) for column in zip(*rows, strict=True)]
    policy_a, policy_b, choices, prompts, samples_a, samples_b, annotators = columns
    policy_a, policy_b = policy_a.astype(np.int64), policy_b.astype(np.int64)
    order = _starting_order(session, sorted({*policy_a.tolist(), *policy_b.tolist()}))
    names_by_id = dict(
        session.execute(select(Model.id, Model.name).where(Model.id.in_(order))).all()
    )
    position = {policy_id: i for i, policy_id in enumerate(order)}
    to_index = np.vectorize(position.__getitem__, otypes=[np.int64])
    words = _word_counts(session, np.concatenate([samples_a, samples_b]).astype(np.int64))
    return PolicyVotes(
        names=[names_by_id[i] for i in order],
        policy_a=to_index(policy_a),
        policy_b=to_index(policy_b),
        outcome=np.array([OUTCOME[c] for c in choices], dtype=np.float64),
        prompt=prompts.astype(np.int64),
        length_a=words[: len(rows)],
        length_b=words[len(rows) :],
        weight=_weights(session, annotators, weigh_by_gold),
    )


def _empty() -> PolicyVotes:
    ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return PolicyVotes([], ints, ints, floats, ints, floats, floats, floats)
