"""Rounds: creation for generation, the samples and pairs they hold, and their statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import Judgment, Model, Pair, Round, Sample
from db.text import storable


@dataclass
class NewSample:
    prompt_id: int
    policy_id: int
    text: str
    decoding: dict[str, Any]
    seed: int
    token_count: int
    finished: bool


@dataclass(frozen=True)
class NewPair:
    """Indices into the list of NewSample given with it."""

    a: int
    b: int
    strategy: str


def find_round(session: Session, number: int) -> Round | None:
    return session.scalar(select(Round).where(Round.number == number))


def get_round(session: Session, number: int) -> Round:
    found = find_round(session, number)
    if found is None:
        raise UserError(f"There is no round {number}; `rlhf rounds list` shows the rounds.")
    return found


def render_mode(session: Session, number: int) -> str:
    """How the annotate page shows round `number`'s responses: "text" or "markdown"
    ("text" for a round that no longer exists, as every round was shown before 0007)."""
    return session.scalar(select(Round.render).where(Round.number == number)) or "text"


def next_round_number(session: Session) -> int:
    return (session.scalar(select(func.max(Round.number))) or 0) + 1


def round_for_generation(
    session: Session,
    number: int,
    *,
    policy: Model,
    previous: Model | None,
    overlap: int,
    gold_rate: float,
    render: str = "text",
    rank_k: int | None = None,
) -> Round:
    """The open round `number`, created if new (its settings then come from the
    arguments; `rank_k` K makes it a ranking round of K responses per task). Generating
    into it again resumes it, with the settings it has."""
    if number < 1:
        raise UserError(f"Round numbers start at 1, not {number}; pass --round 1 or higher.")
    existing = find_round(session, number)
    if existing is None:
        created = Round(
            number=number,
            status="open",
            policy_id=policy.id,
            previous_policy_id=previous.id if previous else None,
            overlap=overlap,
            gold_rate=gold_rate,
            render=render,
            kind="pairwise" if rank_k is None else "ranking",
            rank_k=rank_k,
        )
        session.add(created)
        session.flush()
        return created
    if existing.status != "open":
        raise UserError(
            f"Round {number} is closed, so no samples can be added to it; generate into a new "
            f"round with --round {next_round_number(session)}."
        )
    if existing.rank_k != rank_k:
        shape = f"ranks {existing.rank_k} responses" if existing.rank_k else "is pairwise"
        raise UserError(
            f"Round {number} {shape}; resume it with the same --rank, or generate into round "
            f"{next_round_number(session)}."
        )
    expected = (existing.policy_id, existing.previous_policy_id)
    given = (policy.id, previous.id if previous else None)
    if expected != given:
        raise UserError(
            f"Round {number} was generated from other policies; use the same --policy and "
            f"--previous-policy to resume it, or generate into round {next_round_number(session)}."
        )
    return existing


def prompts_in_round(session: Session, round_id: int) -> int:
    """Prompts that have samples in the round (generated, whether or not they paired)."""
    query = select(func.count(func.distinct(Sample.prompt_id))).where(Sample.round_id == round_id)
    return session.scalar(query) or 0


def add_samples_and_pairs(
    session: Session, round_: Round, samples: list[NewSample], pairs: list[NewPair]
) -> list[Pair]:
    rows = [
        Sample(round_id=round_.id, **(vars(sample) | {"text": storable(sample.text)}))
        for sample in samples
    ]
    session.add_all(rows)
    session.flush()
    created = [
        Pair(
            round_id=round_.id,
            prompt_id=rows[pair.a].prompt_id,
            sample_a_id=rows[pair.a].id,
            sample_b_id=rows[pair.b].id,
            strategy=pair.strategy,
        )
        for pair in pairs
    ]
    session.add_all(created)
    session.flush()
    return created


@dataclass(frozen=True)
class RoundSummary:
    number: int
    status: str
    policy: str | None
    previous_policy: str | None
    prompts: int
    pairs: int
    judgments: int
    overlap: int
    gold_rate: float
    render: str = "text"  # how the annotate page shows its responses: text or markdown
    kind: str = "pairwise"  # or "ranking": tasks of rank_k responses, one ranking each
    rank_k: int | None = None

    @property
    def judgments_needed(self) -> int:
        return self.pairs * self.overlap


def _per_round(session: Session, query: Any) -> dict[int, int]:
    return dict(session.execute(query.group_by(Pair.round_id)).all())


def round_summaries(session: Session) -> list[RoundSummary]:
    names = dict(session.execute(select(Model.id, Model.name)).all())
    pairs = _per_round(session, select(Pair.round_id, func.count(Pair.id)))
    prompts = _per_round(session, select(Pair.round_id, func.count(func.distinct(Pair.prompt_id))))
    judgments = _per_round(session, select(Pair.round_id, func.count(Judgment.id)).join(Judgment))
    return [
        RoundSummary(
            number=round_.number,
            status=round_.status,
            policy=names.get(round_.policy_id),
            previous_policy=names.get(round_.previous_policy_id),
            prompts=prompts.get(round_.id, 0),
            pairs=pairs.get(round_.id, 0),
            judgments=judgments.get(round_.id, 0),
            overlap=round_.overlap,
            gold_rate=round_.gold_rate,
            render=round_.render,
            kind=round_.kind,
            rank_k=round_.rank_k,
        )
        for round_ in session.scalars(select(Round).order_by(Round.number))
    ]


def pair_counts_by_strategy(session: Session, round_: Round) -> dict[str, int]:
    query = (
        select(Pair.strategy, func.count())
        .where(Pair.round_id == round_.id)
        .group_by(Pair.strategy)
        .order_by(Pair.strategy)
    )
    return dict(session.execute(query).all())


def sample_stats(session: Session, round_: Round) -> dict[str, float]:
    row = session.execute(
        select(
            func.count(Sample.id),
            func.avg(Sample.token_count),
            func.sum(case((Sample.finished.is_(False), 1), else_=0)),
        ).where(Sample.round_id == round_.id)
    ).one()
    return {
        "samples": row[0] or 0,
        "mean_tokens": float(row[1] or 0.0),
        "unfinished": int(row[2] or 0),
    }


def example_pairs(session: Session, round_: Round, limit: int = 3) -> list[Pair]:
    return list(
        session.scalars(
            select(Pair).where(Pair.round_id == round_.id).order_by(Pair.id).limit(limit)
        )
    )
