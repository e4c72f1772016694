"""What the annotate page calls: the next pair for an annotator, recording a judgment,
undo, and progress. The simulated annotators and the benchmark call the same functions.

Assignment rules: a pair from an open round that this annotator has not judged, whose
judgments (skips do not count) plus other annotators' unexpired leases are fewer than the
round's overlap. Gold pairs are mixed in at the round's gold rate and are open to every
annotator, since each one is scored on them. Showing a pair leases it to the annotator
for LEASE_SECONDS, with the side its sample A is shown on; judging it ends the lease, and
so does a refusal (`submit_judgment`).

A lease is shown again only while its pair still has room for it. A pair can end up with
more leases than room (an undo leases back a pair that others filled meanwhile; another
annotator turns a skip into a vote; two annotators lease the last place at once, see
below); then the earliest leases keep the pair and the later ones end at their
annotator's next request, rather than offering, until the lease expires, a pair that
record_judgment would refuse.

Locking. Two strategies (`set_locking`), both exact:

- "rows" (the default): on PostgreSQL every transaction that changes a pair's count or
  grants a lease on it first locks that one pair row (`FOR NO KEY UPDATE`); next_pair
  takes its candidate with `SKIP LOCKED`, so annotators looking for work pass over each
  other's pairs instead of queueing, and everything else runs side by side.
- "global": the former behaviour, one lock for all assignment (a transaction-scoped
  advisory lock), kept for comparison (bench/annotate.py runs both).

SQLite has a single writer whichever is chosen: every transaction here starts with a
write (`_begin`), which takes the database's write lock before anything is read.

Why the overlap can never be exceeded. A pair's `judgment_count` only grows in
record_judgment (an undo lowers it), by +1 for a new vote or a skip turned into one, and
only after that transaction holds the pair's row lock (rows: `FOR NO KEY UPDATE`; global:
the advisory lock; SQLite: the write lock). The lock is held until commit, and under
PostgreSQL's READ COMMITTED a row read with `FOR ... UPDATE` is its newest committed
version, so the count the check `judgment_count < overlap` sees is the count at the
moment of the write: no other transaction can change it between the check and the
commit. The judgment row is read under the same lock, and (pair, annotator) is unique in
the schema, so a double submit updates the one row and its +1 is not counted twice. The
count is changed in the same transaction as the row, so a failed or killed transaction
changes neither. Leases never enter this argument: they only decide which pair is
offered, so a lease granted on stale data can cost an annotator a refusal
(PairUnavailable), never an extra judgment. (They are granted under the pair's lock too,
with the room checked again by the statement that inserts the lease, so that refusal is
rare: only an undo or a skip turned into a vote makes one.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, literal, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, sessionmaker

from db.engine import transaction
from db.errors import UserError
from db.models import CHOICES, Judgment, Pair, PairLease, Prompt, Round, Sample, utcnow
from db.round_progress import note_judgment, round_done

LEASE_SECONDS = 10 * 60
LOCKINGS = ("rows", "global")
_ADVISORY_LOCK_KEY = 7_215_031  # an arbitrary constant naming "assignment" for PostgreSQL
# next_pair's tries at a locked candidate whose room went meanwhile, per open round.
_CLAIM_TRIES = 8
_locking = "rows"


class PairUnavailable(UserError):
    """The pair cannot take this judgment (its round closed, or others filled it)."""


@dataclass(frozen=True)
class Assignment:
    pair_id: int
    round_number: int
    prompt: str
    text_a: str
    text_b: str
    guidelines: str
    # "A" or "B": the stored sample to show on the left, kept for as long as the lease.
    left_sample: str


@dataclass(frozen=True)
class Progress:
    mine_today: int
    round_number: int | None
    round_done: int
    round_total: int

    @property
    def fraction(self) -> float:
        return self.round_done / self.round_total if self.round_total else 0.0


def set_locking(name: str) -> None:
    """Choose how assignment is kept exact on PostgreSQL for this process: "rows" (row
    locks per pair, the default) or "global" (one advisory lock for all, as before)."""
    global _locking
    if name not in LOCKINGS:
        raise UserError(f"Unknown assignment locking {name!r}; use one of: {', '.join(LOCKINGS)}.")
    _locking = name


def locking() -> str:
    """The assignment locking in use (see set_locking)."""
    return _locking


def _begin(session: Session) -> None:
    """Take the locks this transaction needs before it reads anything.

    PostgreSQL with "global": the transaction-scoped advisory lock; with "rows": none here
    (each pair is locked where it is used). SQLite: a write that changes nothing, which
    takes the database's single write lock, so no other writer can change what this
    transaction is about to decide on.
    """
    if session.get_bind().dialect.name == "postgresql":
        if _locking == "global":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    else:
        session.execute(
            update(PairLease).where(PairLease.id == -1).values(pair_id=PairLease.pair_id)
        )


def _lock_pair(session: Session, pair_id: int) -> Any:
    """The pair's row with its round's status and overlap, locked until commit (its
    newest committed version: see the module docstring); None if there is no such pair."""
    return session.execute(
        select(Pair.round_id, Pair.gold_choice, Pair.judgment_count, Round.status, Round.overlap)
        .join(Round, Round.id == Pair.round_id)
        .where(Pair.id == pair_id)
        .with_for_update(key_share=True, of=Pair)
    ).one_or_none()


def _assignment(session: Session, pair_id: int, left_sample: str) -> Assignment:
    sample_a, sample_b = aliased(Sample), aliased(Sample)
    number, prompt, text_a, text_b, guidelines = session.execute(
        select(Round.number, Prompt.text, sample_a.text, sample_b.text, Round.guidelines)
        .select_from(Pair)
        .join(Round, Round.id == Pair.round_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(sample_a, sample_a.id == Pair.sample_a_id)
        .join(sample_b, sample_b.id == Pair.sample_b_id)
        .where(Pair.id == pair_id)
    ).one()
    return Assignment(
        pair_id=pair_id,
        round_number=number,
        prompt=prompt,
        text_a=text_a,
        text_b=text_b,
        guidelines=guidelines,
        left_sample=left_sample,
    )


def _not_judged_by(annotator_id: int) -> Any:
    return ~exists().where(Judgment.pair_id == Pair.id, Judgment.annotator_id == annotator_id)


def _not_leased_to(annotator_id: int) -> Any:
    return ~exists().where(PairLease.pair_id == Pair.id, PairLease.annotator_id == annotator_id)


def _leased_by_others(annotator_id: int, now: datetime) -> Any:
    return (
        select(func.count(PairLease.id))
        .where(
            PairLease.pair_id == Pair.id,
            PairLease.annotator_id != annotator_id,
            PairLease.expires_at > now,
        )
        .scalar_subquery()
    )


def _held_pair(session: Session, annotator_id: int, now: datetime) -> tuple[int, str] | None:
    """(pair id, side) of a pair this annotator was shown, still leased to them, not yet
    judged, and with room for their judgment, its lease extended. Their leases on pairs
    without room end here, and so do their expired ones (so that every pair without a
    lease row of theirs is one they may be offered afresh)."""
    earlier = aliased(PairLease)
    # Judgments plus the live leases of others granted before this one: if that fills the
    # overlap, this lease's judgment would be refused.
    ahead = (
        select(func.count(earlier.id))
        .where(
            earlier.pair_id == PairLease.pair_id,
            earlier.annotator_id != annotator_id,
            earlier.expires_at > now,
            earlier.id < PairLease.id,
        )
        .scalar_subquery()
    )
    has_room = or_(Pair.gold_choice.is_not(None), Pair.judgment_count + ahead < Round.overlap)
    usable = (Round.status == "open") & _not_judged_by(annotator_id)
    held = session.execute(
        select(
            PairLease.id,
            PairLease.pair_id,
            PairLease.left_sample,
            PairLease.expires_at > now,
            usable,
            has_room,
        )
        .join(Pair, Pair.id == PairLease.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(PairLease.annotator_id == annotator_id)
        .order_by(PairLease.expires_at.desc(), PairLease.id.desc())
    ).all()
    ended = [lease for lease, _, _, live, use, room in held if not live or (use and not room)]
    if ended:
        session.execute(delete(PairLease).where(PairLease.id.in_(ended)))
    for _, pair_id, side, live, use, room in held:
        if live and use and room:
            session.execute(
                update(PairLease)
                .where(PairLease.pair_id == pair_id, PairLease.annotator_id == annotator_id)
                .values(expires_at=now + timedelta(seconds=LEASE_SECONDS))
            )
            return pair_id, side
    return None


def _open_rounds(session: Session) -> list[Any]:
    return list(
        session.execute(
            select(Round.id, Round.overlap, Round.gold_rate)
            .where(Round.status == "open")
            .order_by(Round.number)
        ).all()
    )


def _new_lease(
    session: Session, pair_id: int, annotator_id: int, now: datetime, left_sample: str
) -> bool:
    """Lease the pair to the annotator if it still has room for them (checked by the
    insert itself, on the newest committed rows: the caller holds the pair's lock, or the
    pair is gold); False if not, or if they already hold a lease row on it."""
    expires = now + timedelta(seconds=LEASE_SECONDS)
    room = or_(
        Pair.gold_choice.is_not(None),
        Pair.judgment_count + _leased_by_others(annotator_id, now) < Round.overlap,
    )
    values = select(
        Pair.id,
        literal(annotator_id),
        literal(expires, PairLease.expires_at.type),
        literal(left_sample),
    ).where(
        Pair.id == pair_id,
        Round.id == Pair.round_id,
        Round.status == "open",
        _not_judged_by(annotator_id),
        room,
    )
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(PairLease)
        .from_select(["pair_id", "annotator_id", "expires_at", "left_sample"], values)
        .on_conflict_do_nothing(index_elements=["pair_id", "annotator_id"])
        .returning(PairLease.id)
    )
    return session.execute(statement).first() is not None


def _claim_ordinary(
    session: Session, annotator_id: int, now: datetime, round_id: int, overlap: int, side: str
) -> int | None:
    """Lease this annotator the round's ordinary pair closest to done that has room for
    them; its id, or None.

    The query walks the index (round_id, judgment_count, id) backwards from the fullest
    pairs, with the overlap as a constant, and stops at the first that fits and is not
    locked by another transaction (SKIP LOCKED): no sort over the round's pairs, and no
    waiting behind another annotator's pair. The lease's own insert checks the room
    again, since another transaction may have leased the pair between this query's
    snapshot and its lock; then the next candidate is tried.
    """
    passed: list[int] = []
    for _ in range(_CLAIM_TRIES):
        query = select(Pair.id).where(
            Pair.round_id == round_id,
            Pair.judgment_count < overlap,
            Pair.gold_choice.is_(None),
            _not_judged_by(annotator_id),
            _not_leased_to(annotator_id),
            Pair.judgment_count + _leased_by_others(annotator_id, now) < overlap,
            Pair.id.not_in(passed) if passed else true(),
        )
        pair_id = session.scalar(
            query.order_by(Pair.round_id.desc(), Pair.judgment_count.desc(), Pair.id.desc())
            .limit(1)
            .with_for_update(key_share=True, skip_locked=True)
        )
        if pair_id is None:
            return None
        if _new_lease(session, pair_id, annotator_id, now, side):
            return pair_id
        passed.append(pair_id)
    return None


def _gold_pair(session: Session, annotator_id: int, round_id: int, draw: float) -> int | None:
    candidates = select(Pair.id).where(
        Pair.round_id == round_id, Pair.gold_choice.is_not(None), _not_judged_by(annotator_id)
    )
    count = session.scalar(select(func.count()).select_from(candidates.subquery())) or 0
    if count == 0:
        return None
    return session.scalar(candidates.order_by(Pair.id).offset(int(draw * count)).limit(1))


def release_lease(session: Session, annotator_id: int, pair_id: int) -> None:
    """End this annotator's lease on the pair, if any: the pair is free for others."""
    session.execute(
        delete(PairLease).where(
            PairLease.pair_id == pair_id, PairLease.annotator_id == annotator_id
        )
    )


def next_pair(
    session: Session,
    annotator_id: int,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """The pair to show this annotator now, leased to them; None when nothing is left."""
    now = now or utcnow()
    rng = rng or random.Random()
    _begin(session)
    held = _held_pair(session, annotator_id, now)
    if held is not None:
        return _assignment(session, *held)
    side = rng.choice("AB")
    for round_id, overlap, gold_rate in _open_rounds(session):
        # Gold pairs come at the gold rate, and also once no ordinary pair is left.
        if rng.random() < (gold_rate or 0.0):
            gold = _gold_pair(session, annotator_id, round_id, rng.random())
            if gold is not None and _new_lease(session, gold, annotator_id, now, side):
                return _assignment(session, gold, side)
        pair_id = _claim_ordinary(session, annotator_id, now, round_id, overlap, side)
        if pair_id is None:
            pair_id = _gold_pair(session, annotator_id, round_id, rng.random())
            if pair_id is None or not _new_lease(session, pair_id, annotator_id, now, side):
                continue
        return _assignment(session, pair_id, side)
    return None


def record_judgment(
    session: Session,
    annotator_id: int,
    pair_id: int,
    *,
    choice: str,
    left_sample: str,
    strength: int | None = None,
    rationale: str = "",
    flags: dict[str, Any] | None = None,
    ms_spent: int = 0,
) -> Judgment:
    """Store the judgment; a second submit for the same pair updates it, never adds one.

    `choice` names the stored pair's sample (A or B), whichever side it was shown on.
    """
    if choice not in CHOICES:
        raise UserError(f"Unknown choice {choice!r}; use one of: {', '.join(CHOICES)}.")
    if left_sample not in ("A", "B"):
        raise UserError(f"left_sample is {left_sample!r}; it must be A or B.")
    if strength is not None and not 1 <= strength <= 3:
        raise UserError(f"Strength {strength} is out of range; use 1, 2 or 3.")
    _begin(session)
    pair = _lock_pair(session, pair_id)
    if pair is None or pair.status != "open":
        raise PairUnavailable("This pair's round is closed; your judgment was not needed.")
    counts = choice != "skip"
    judgment = session.scalar(
        select(Judgment)
        .where(Judgment.pair_id == pair_id, Judgment.annotator_id == annotator_id)
        .execution_options(populate_existing=True)
    )
    # How this submit changes the pair's count: +1 for a new vote, and also for a skip
    # turned into a vote on resubmit, which must respect the overlap just the same.
    delta = int(counts) - (0 if judgment is None else int(judgment.choice != "skip"))
    gold = pair.gold_choice is not None
    if delta > 0 and not gold and pair.judgment_count >= pair.overlap:
        raise PairUnavailable(
            "Other annotators completed this pair meanwhile; here is the next one."
        )
    new = judgment is None
    if new:
        judgment = Judgment(pair_id=pair_id, annotator_id=annotator_id)
        session.add(judgment)
    judgment.choice = choice
    judgment.left_sample = left_sample
    judgment.strength = strength
    judgment.rationale = rationale
    judgment.flags = flags or {}
    judgment.ms_spent = max(0, int(ms_spent))
    judgment.created_at = utcnow()
    if delta:
        session.execute(
            update(Pair)
            .where(Pair.id == pair_id)
            .values(judgment_count=Pair.judgment_count + delta)
        )
    release_lease(session, annotator_id, pair_id)
    session.flush()
    if new or delta:
        change = 0 if gold else _capped_change(pair.judgment_count, delta, pair.overlap)
        note_judgment(session, pair.round_id, pair.overlap, change, judgment.id if new else None)
    return judgment


def _capped_change(count: int, delta: int, overlap: int) -> int:
    """How the round's progress changes when a pair's count moves by `delta`: a pair
    counts at most `overlap` judgments."""
    return min(count + delta, overlap) - min(count, overlap)


def submit_judgment(
    sessions: sessionmaker[Session], annotator_id: int, pair_id: int, **judgment: Any
) -> None:
    """What the annotate page calls: record_judgment (same keywords: choice, left_sample,
    strength, rationale, flags, ms_spent) in a transaction of its own. On PairUnavailable
    that transaction rolls back, lease and all, so the lease is ended in a second one
    before the refusal goes on to the caller."""
    try:
        with transaction(sessions) as session:
            record_judgment(session, annotator_id, pair_id, **judgment)
    except PairUnavailable:
        with transaction(sessions) as session:
            release_lease(session, annotator_id, pair_id)
        raise


def undo_last(session: Session, annotator_id: int, *, now: datetime | None = None) -> int | None:
    """Remove this annotator's latest judgment in an open round and lease its pair back to
    them, so it is the next pair they see. Returns the pair id, or None."""
    _begin(session)
    latest = session.execute(
        select(Judgment.id, Judgment.pair_id)
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(Judgment.annotator_id == annotator_id, Round.status == "open")
        .order_by(Judgment.created_at.desc(), Judgment.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return None
    pair_id = latest.pair_id
    pair = _lock_pair(session, pair_id)
    # Read again under the pair's lock: a second tab may have changed or undone it.
    judgment = session.scalar(
        select(Judgment).where(Judgment.id == latest.id).execution_options(populate_existing=True)
    )
    if judgment is None:
        return None
    if judgment.choice != "skip":
        session.execute(
            update(Pair).where(Pair.id == pair_id).values(judgment_count=Pair.judgment_count - 1)
        )
        if pair.gold_choice is None:
            change = _capped_change(pair.judgment_count, -1, pair.overlap)
            note_judgment(session, pair.round_id, pair.overlap, change, None)
    left_sample = judgment.left_sample
    session.delete(judgment)
    session.flush()
    # Shown again the way round it was judged. Any lease left from before is replaced: the
    # side must be the judgment's, and the new row's id puts it behind leases granted while
    # the judgment stood (if those fill the pair, _held_pair ends this one).
    release_lease(session, annotator_id, pair_id)
    expires = (now or utcnow()) + timedelta(seconds=LEASE_SECONDS)
    session.add(
        PairLease(
            pair_id=pair_id, annotator_id=annotator_id, expires_at=expires, left_sample=left_sample
        )
    )
    session.flush()
    return pair_id


def progress(session: Session, annotator_id: int, *, now: datetime | None = None) -> Progress:
    """Judgments this annotator made today (UTC), and the first open round's completion
    (from db.round_progress: exact for this process's judgments and others' new ones,
    within a few seconds for the rest)."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = session.scalar(
        select(func.count(Judgment.id)).where(
            Judgment.annotator_id == annotator_id, Judgment.created_at >= midnight
        )
    )
    round_ = session.execute(
        select(Round.id, Round.number, Round.overlap)
        .where(Round.status == "open")
        .order_by(Round.number)
        .limit(1)
    ).first()
    if round_ is None:
        return Progress(mine or 0, None, 0, 0)
    done, pairs = round_done(session, round_.id, round_.overlap)
    return Progress(mine or 0, round_.number, done, pairs * round_.overlap)
