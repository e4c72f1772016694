"""Reading what an export needs from the database, column-wise.

One query per table, fetched straight into numpy arrays: an export of a million
judgments must not build a million ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, select

from db.models import Judgment, Model, Pair, Prompt, Round, Sample, User
from rlhf_train.errors import UserError
from rlhf_train.judgments.agreement import CODE

_ID_CHUNK = 900


@dataclass(frozen=True)
class RoundSelection:
    ids: list[int]
    numbers: list[int]


@dataclass(frozen=True)
class PairTable:
    """One row per pair, sorted by id."""

    ids: np.ndarray
    round_numbers: np.ndarray
    prompt_ids: np.ndarray
    sample_a: np.ndarray
    sample_b: np.ndarray
    gold: np.ndarray  # code of the gold answer, -1 for ordinary pairs


@dataclass(frozen=True)
class VoteTable:
    """One row per judgment (skips included)."""

    pair_ids: np.ndarray
    annotator_ids: np.ndarray
    choices: np.ndarray  # strings
    strengths: np.ndarray  # 0 where not given


def _columns(rows: Sequence[tuple], count: int) -> list[tuple]:
    return list(zip(*rows, strict=True)) if rows else [()] * count


def select_rounds(connection: Connection, numbers: list[int] | None) -> RoundSelection:
    """The rounds named by number, or every round for None."""
    found = dict(connection.execute(select(Round.number, Round.id)).all())
    if numbers is None:
        chosen = sorted(found)
    else:
        missing = sorted(set(numbers) - set(found))
        if missing:
            raise UserError(
                f"There is no round {', '.join(map(str, missing))}; `rlhf rounds list` shows "
                "the rounds."
            )
        chosen = sorted(set(numbers))
    if not chosen:
        raise UserError("There are no rounds to export yet; generate one with `rlhf generate`.")
    return RoundSelection(ids=[found[number] for number in chosen], numbers=chosen)


def load_pairs(connection: Connection, rounds: RoundSelection) -> PairTable:
    query = (
        select(
            Pair.id,
            Round.number,
            Pair.prompt_id,
            Pair.sample_a_id,
            Pair.sample_b_id,
            Pair.gold_choice,
        )
        .join(Round, Round.id == Pair.round_id)
        .where(Pair.round_id.in_(rounds.ids))
        .order_by(Pair.id)
    )
    ids, numbers, prompts, a, b, gold = _columns(connection.execute(query).all(), 6)
    return PairTable(
        ids=np.array(ids, dtype=np.int64),
        round_numbers=np.array(numbers, dtype=np.int64),
        prompt_ids=np.array(prompts, dtype=np.int64),
        sample_a=np.array(a, dtype=np.int64),
        sample_b=np.array(b, dtype=np.int64),
        gold=np.array([CODE.get(g, -1) for g in gold], dtype=np.int8),
    )


def load_votes(connection: Connection, rounds: RoundSelection) -> VoteTable:
    query = (
        select(Judgment.pair_id, Judgment.annotator_id, Judgment.choice, Judgment.strength)
        .join(Pair, Pair.id == Judgment.pair_id)
        .where(Pair.round_id.in_(rounds.ids))
    )
    pair_ids, annotators, choices, strengths = _columns(connection.execute(query).all(), 4)
    return VoteTable(
        pair_ids=np.array(pair_ids, dtype=np.int64),
        annotator_ids=np.array(annotators, dtype=np.int64),
        choices=np.array(choices, dtype=object),
        strengths=np.array([s or 0 for s in strengths], dtype=np.int64),
    )


def user_names(connection: Connection) -> dict[int, str]:
    return dict(connection.execute(select(User.id, User.name)).all())


def prompt_texts(connection: Connection, rounds: RoundSelection) -> dict[int, tuple[str, str]]:
    """Prompt id -> (text, content hash), for the prompts of the selected rounds."""
    used = select(Pair.prompt_id).where(Pair.round_id.in_(rounds.ids)).distinct()
    query = select(Prompt.id, Prompt.text, Prompt.content_hash).where(Prompt.id.in_(used))
    return {pid: (text, digest) for pid, text, digest in connection.execute(query)}


def prompt_conversations(connection: Connection, rounds: RoundSelection) -> dict[str, list]:
    """Content hash -> messages, for the selected rounds' prompts that are conversations
    (what --conversational writes as the prompt; plain prompts become one user turn)."""
    used = select(Pair.prompt_id).where(Pair.round_id.in_(rounds.ids)).distinct()
    query = select(Prompt.content_hash, Prompt.messages).where(
        Prompt.id.in_(used), Prompt.messages.is_not(None)
    )
    return {digest: messages for digest, messages in connection.execute(query)}


def sample_texts(
    connection: Connection, rounds: RoundSelection, wanted: Iterable[int]
) -> dict[int, tuple[str, str]]:
    """Sample id -> (text, policy name) for the `wanted` samples.

    Samples are read by round (one indexed scan); the rare sample a pair borrows from
    another round is then fetched by id.
    """
    wanted_ids = set(wanted)
    columns = select(Sample.id, Sample.text, Model.name).join(Model, Model.id == Sample.policy_id)
    found = {
        sid: (text, policy)
        for sid, text, policy in connection.execute(columns.where(Sample.round_id.in_(rounds.ids)))
        if sid in wanted_ids
    }
    missing = sorted(wanted_ids - found.keys())
    for start in range(0, len(missing), _ID_CHUNK):
        chunk = missing[start : start + _ID_CHUNK]
        found.update(
            (sid, (text, policy))
            for sid, text, policy in connection.execute(columns.where(Sample.id.in_(chunk)))
        )
    return found
