"""Prompts: content-hash deduplicated insertion and selection for a round."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import Prompt, Sample
from db.names import checked_name
from db.text import storable

_HASH_LOOKUP_CHUNK = 500
SOURCE_LENGTH: int = Prompt.__table__.c.source.type.length


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PromptImport:
    added: int
    duplicates_in_input: int
    already_present: int


def add_prompts(
    session: Session,
    texts: Iterable[str],
    *,
    source: str,
    chat: bool,
    split_of: Callable[[str], str] = lambda _hash: "train",
) -> PromptImport:
    """Insert new prompts; texts already stored (by content hash) or repeated are skipped."""
    source = checked_name(
        source, what="prompt source label", max_length=SOURCE_LENGTH, example="support-tickets"
    )
    unique: dict[str, str] = {}
    duplicates = 0
    for text in map(storable, texts):
        if not text.strip():
            raise UserError(
                "A prompt is empty once its NUL characters are removed; give it text or remove it."
            )
        digest = content_hash(text)
        if digest in unique:
            duplicates += 1
        else:
            unique[digest] = text
    hashes = list(unique)
    present: set[str] = set()
    for start in range(0, len(hashes), _HASH_LOOKUP_CHUNK):
        chunk = hashes[start : start + _HASH_LOOKUP_CHUNK]
        present.update(
            session.scalars(select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk)))
        )
    new = [
        Prompt(text=text, source=source, content_hash=digest, split=split_of(digest), chat=chat)
        for digest, text in unique.items()
        if digest not in present
    ]
    session.add_all(new)
    session.flush()
    return PromptImport(
        added=len(new), duplicates_in_input=duplicates, already_present=len(present)
    )


def prompt_ids_by_hash(session: Session, hashes: Iterable[str]) -> dict[str, int]:
    wanted = list(set(hashes))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _HASH_LOOKUP_CHUNK):
        chunk = wanted[start : start + _HASH_LOOKUP_CHUNK]
        query = select(Prompt.content_hash, Prompt.id).where(Prompt.content_hash.in_(chunk))
        found.update(session.execute(query).all())
    return found


def count_prompts(session: Session, split: str | None = None) -> int:
    query = select(func.count()).select_from(Prompt)
    if split is not None:
        query = query.where(Prompt.split == split)
    return session.scalar(query) or 0


def prompts_for_round(session: Session, round_id: int, *, split: str, limit: int) -> list[Prompt]:
    """Up to `limit` prompts of `split` that this round has no samples of yet.

    Prompts never used by any round come first, so rounds cover the prompt pool before
    repeating it; within each group the order is by content hash: a fixed shuffle, so
    a rerun picks the same prompts and no source dominates by file order.
    """
    if limit <= 0:
        return []
    in_this_round = select(Sample.prompt_id).where(Sample.round_id == round_id)
    times_used = (
        select(Sample.prompt_id, func.count(func.distinct(Sample.round_id)).label("rounds"))
        .where(Sample.round_id.is_not(None))
        .group_by(Sample.prompt_id)
        .subquery()
    )
    query = (
        select(Prompt)
        .outerjoin(times_used, times_used.c.prompt_id == Prompt.id)
        .where(Prompt.split == split, Prompt.id.not_in(in_this_round))
        .order_by(func.coalesce(times_used.c.rounds, 0), Prompt.content_hash)
        .limit(limit)
    )
    return list(session.scalars(query))
