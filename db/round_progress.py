"""A round's completion for the progress bar, read from a per-process cache.

The exact figure is a sum over every ordinary pair of the round (100,000 of them in a
large round: about 20 ms), and the annotate page draws it on every submit. So each
process keeps the last figure per (database, round, overlap) and:

- adds the change of each judgment this process commits (`note_judgment`, applied by a
  session `after_commit` hook, so a rolled-back submit changes nothing): one server
  process sees its own annotators' work at once;
- compares, on each read, the newest judgment id in the database (one index probe) with
  the newest it has accounted for: a judgment inserted elsewhere (another process, a
  reset database) makes the next read compute the figure again;
- computes it again anyway once it is MAX_AGE_SECONDS old, which bounds what the id
  check cannot see (another process's undo or changed answer, a pair made gold).

So the bar is exact for the process's own judgments and for others' new ones, and exact
within MAX_AGE_SECONDS for the rest.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import case, event, func, select
from sqlalchemy.orm import Session

from db.models import Judgment, Pair

MAX_AGE_SECONDS = 3.0
_PENDING = "round_progress_pending"  # session.info key: changes waiting for the commit


@dataclass
class _Entry:
    done: int
    pairs: int
    read_id: int  # the newest judgment id when the sum was read
    newest_id: int  # the newest judgment id this figure accounts for
    read_at: float


_cache: dict[tuple[str, int, int], _Entry] = {}
_lock = threading.Lock()


def _key(session: Session, round_id: int, overlap: int) -> tuple[str, int, int]:
    return (str(session.get_bind().engine.url), round_id, overlap)


NEWEST_JUDGMENT = select(func.coalesce(func.max(Judgment.id), 0)).scalar_subquery()


def round_done(
    session: Session, round_id: int, overlap: int, newest: int | None = None
) -> tuple[int, int]:
    """(judgments counted toward the overlap, ordinary pairs) of the round; each pair
    counts at most `overlap` judgments. `newest` is the newest judgment id, if the caller
    read it already (NEWEST_JUDGMENT, in the same statement as its other figures)."""
    key = _key(session, round_id, overlap)
    if newest is None:
        newest = session.scalar(select(NEWEST_JUDGMENT))
    with _lock:
        entry = _cache.get(key)
        if (
            entry is not None
            and entry.newest_id == newest
            and time.monotonic() - entry.read_at < MAX_AGE_SECONDS
        ):
            return entry.done, entry.pairs
    capped = case((Pair.judgment_count > overlap, overlap), else_=Pair.judgment_count)
    # One statement, so the sum and the newest id come from the same snapshot.
    done, pairs, newest = session.execute(
        select(
            func.coalesce(func.sum(capped), 0),
            func.count(Pair.id),
            NEWEST_JUDGMENT,
        ).where(Pair.round_id == round_id, Pair.gold_choice.is_(None))
    ).one()
    with _lock:
        _cache[key] = _Entry(int(done), int(pairs), int(newest), int(newest), time.monotonic())
    return int(done), int(pairs)


def note_judgment(
    session: Session, round_id: int, overlap: int, change: int, new_id: int | None
) -> None:
    """Once this session commits: add `change` to the round's cached figure and count
    `new_id` (a judgment this session inserted) as accounted for. `new_id` None means a
    change the id check cannot place (an undo, a changed answer): the figure is dropped
    and computed again at the next read."""
    session.info.setdefault(_PENDING, []).append((_key(session, round_id, overlap), change, new_id))


@event.listens_for(Session, "after_commit")
def _apply(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    with _lock:
        for key, change, new_id in pending:
            entry = _cache.get(key)
            if entry is None:
                continue
            if new_id is None:
                del _cache[key]
            elif new_id > entry.read_id:
                # Not in the sum yet: a judgment the sum included has an id at most the
                # newest id read with it. (One inserted before that read and committed
                # after it is missed until the figure's age runs out.)
                entry.done += change
                entry.newest_id = max(entry.newest_id, new_id)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


def clear() -> None:
    """Forget every cached figure (the benchmark times the exact sum this way)."""
    with _lock:
        _cache.clear()
