"""Prompts: content-hash deduplicated insertion and selection for a round.

A prompt is a text or a conversation (db/conversations.py: a list of messages already
checked by check_messages); a conversation of one user turn is stored as that text with
chat set, the same row a plain chat prompt of that text is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.conversations import Message, conversation_hash, conversation_text, is_single_question
from db.errors import UserError
from db.models import Pair, Prompt, Sample
from db.names import checked_name
from db.text import storable

_HASH_LOOKUP_CHUNK = 500
SOURCE_LENGTH: int = Prompt.__table__.c.source.type.length


# A prompt as a reader returns it: a text, or a conversation's checked messages.
PromptItem = str | Sequence[Message]


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Entry:
    text: str
    messages: list[Message] | None
    chat: bool


def _entry(item: PromptItem, chat: bool) -> tuple[str, _Entry]:
    """(content hash, what is stored) of one prompt; a conversation is always chat."""
    if isinstance(item, str):
        text = storable(item)
        if not text.strip():
            raise UserError(
                "A prompt is empty once its NUL characters are removed; give it text or remove it."
            )
        return content_hash(text), _Entry(text, None, chat)
    messages = [{"role": m["role"], "content": storable(m["content"])} for m in item]
    if is_single_question(messages):
        return content_hash(messages[0]["content"]), _Entry(messages[0]["content"], None, True)
    return conversation_hash(messages), _Entry(conversation_text(messages), messages, True)


def prompt_hash(item: PromptItem) -> str:
    """The content hash `add_prompts` stores `item` under."""
    return _entry(item, chat=False)[0]


@dataclass(frozen=True)
class PromptImport:
    added: int
    duplicates_in_input: int
    already_present: int


def add_prompts(
    session: Session,
    texts: Iterable[PromptItem],
    *,
    source: str,
    chat: bool,
    split_of: Callable[[str], str] = lambda _hash: "train",
) -> PromptImport:
    """Insert new prompts (texts or conversations); those already stored (by content
    hash) or repeated are skipped. `chat` applies to texts; conversations are chat."""
    source = checked_name(
        source, what="prompt source label", max_length=SOURCE_LENGTH, example="support-tickets"
    )
    unique: dict[str, _Entry] = {}
    duplicates = 0
    for item in texts:
        digest, entry = _entry(item, chat)
        if digest in unique:
            duplicates += 1
        else:
            unique[digest] = entry
    hashes = list(unique)
    present: set[str] = set()
    for start in range(0, len(hashes), _HASH_LOOKUP_CHUNK):
        chunk = hashes[start : start + _HASH_LOOKUP_CHUNK]
        present.update(
            session.scalars(select(Prompt.content_hash).where(Prompt.content_hash.in_(chunk)))
        )
    new = [
        Prompt(
            text=entry.text,
            source=source,
            content_hash=digest,
            split=split_of(digest),
            chat=entry.chat,
            messages=entry.messages,
        )
        for digest, entry in unique.items()
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


def pair_messages(session: Session, pair_id: int) -> list[Message] | None:
    """The conversation a pair's (or ranking task's) prompt is, or None for a plain prompt."""
    query = select(Prompt.messages).join(Pair, Pair.prompt_id == Prompt.id)
    return session.scalar(query.where(Pair.id == pair_id))
