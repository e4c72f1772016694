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
annotator turns a skip into a vote); then the earliest leases keep the pair and the later
ones end at their annotator's next request, rather than offering, until the lease
expires, a pair that record_judgment would refuse.

Deciding and writing happen under one lock per database (`_serialize`), so two
annotators at once can never push a pair past its overlap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from db.engine import transaction
from db.errors import UserError
from db.models import CHOICES, Judgment, Pair, PairLease, Prompt, Round, Sample, utcnow

LEASE_SECONDS = 10 * 60
_ADVISORY_LOCK_KEY = 7_215_031  # an arbitrary constant naming "assignment" for PostgreSQL


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


def _serialize(session: Session) -> None:
    """Take the assignment lock for the rest of this transaction.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write that changes nothing,
    which takes the database's single write lock before anything is read, so no other
    writer can change what this transaction is about to decide on.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    else:
        session.execute(
            update(PairLease).where(PairLease.id == -1).values(pair_id=PairLease.pair_id)
        )


def _assignment(session: Session, pair_id: int, left_sample: str) -> Assignment:
    pair = session.get(Pair, pair_id)
    query = select(Sample.id, Sample.text).where(
        Sample.id.in_([pair.sample_a_id, pair.sample_b_id])
    )
    texts = dict(session.execute(query).all())
    round_ = session.get(Round, pair.round_id)
    return Assignment(
        pair_id=pair.id,
        round_number=round_.number,
        prompt=session.scalar(select(Prompt.text).where(Prompt.id == pair.prompt_id)),
        text_a=texts[pair.sample_a_id],
        text_b=texts[pair.sample_b_id],
        guidelines=round_.guidelines,
        left_sample=left_sample,
    )


def _not_judged_by(annotator_id: int) -> Any:
    return ~exists().where(Judgment.pair_id == Pair.id, Judgment.annotator_id == annotator_id)


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


def _held_pair(session: Session, annotator_id: int, now: datetime) -> int | None:
    """A pair this annotator was shown, still leased to them, not yet judged, and with
    room for their judgment. Their leases on pairs without room end here."""
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
    held = session.execute(
        select(PairLease.id, PairLease.pair_id, has_room)
        .join(Pair, Pair.id == PairLease.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(
            PairLease.annotator_id == annotator_id,
            PairLease.expires_at > now,
            Round.status == "open",
            _not_judged_by(annotator_id),
        )
        .order_by(PairLease.expires_at.desc(), PairLease.id.desc())
    ).all()
    full = [lease_id for lease_id, _, room in held if not room]
    if full:
        session.execute(delete(PairLease).where(PairLease.id.in_(full)))
    return next((pair_id for _, pair_id, room in held if room), None)


def _ordinary_pair(session: Session, annotator_id: int, now: datetime) -> tuple[int, int] | None:
    """(pair id, round id) of the pair to show next; pairs closest to done come first.

    One query per open round, with the round's overlap as a constant, walks the index
    (round_id, judgment_count, id) backwards from the fullest pairs and stops at the
    first that fits: no sort over the round's pairs, however many there are.
    """
    open_rounds = session.execute(
        select(Round.id, Round.overlap).where(Round.status == "open").order_by(Round.number)
    ).all()
    for round_id, overlap in open_rounds:
        pair_id = session.scalar(
            select(Pair.id)
            .where(
                Pair.round_id == round_id,
                Pair.judgment_count < overlap,
                Pair.gold_choice.is_(None),
                _not_judged_by(annotator_id),
                Pair.judgment_count + _leased_by_others(annotator_id, now) < overlap,
            )
            .order_by(Pair.round_id.desc(), Pair.judgment_count.desc(), Pair.id.desc())
            .limit(1)
        )
        if pair_id is not None:
            return pair_id, round_id
    return None


def _gold_pair(session: Session, annotator_id: int, round_id: int, draw: float) -> int | None:
    candidates = select(Pair.id).where(
        Pair.round_id == round_id, Pair.gold_choice.is_not(None), _not_judged_by(annotator_id)
    )
    count = session.scalar(select(func.count()).select_from(candidates.subquery())) or 0
    if count == 0:
        return None
    return session.scalar(candidates.order_by(Pair.id).offset(int(draw * count)).limit(1))


def _lease(
    session: Session, pair_id: int, annotator_id: int, now: datetime, left_sample: str
) -> str:
    """Lease the pair to the annotator (or extend their live lease, which keeps its side);
    returns the side shown on the left. `left_sample` is the side of a new lease."""
    expires = now + timedelta(seconds=LEASE_SECONDS)
    lease = session.scalar(
        select(PairLease).where(
            PairLease.pair_id == pair_id, PairLease.annotator_id == annotator_id
        )
    )
    if lease is not None and lease.expires_at > now:
        lease.expires_at = expires
        session.flush()
        return lease.left_sample
    if lease is not None:
        # An expired lease is a new one: a new row, so its id says when it was granted.
        session.delete(lease)
        session.flush()
    session.add(
        PairLease(
            pair_id=pair_id, annotator_id=annotator_id, expires_at=expires, left_sample=left_sample
        )
    )
    session.flush()
    return left_sample


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
    _serialize(session)
    pair_id = _held_pair(session, annotator_id, now)
    if pair_id is None:
        ordinary = _ordinary_pair(session, annotator_id, now)
        round_id = (
            ordinary[1]
            if ordinary
            else session.scalar(
                select(Round.id).where(Round.status == "open").order_by(Round.number).limit(1)
            )
        )
        gold_rate = session.scalar(select(Round.gold_rate).where(Round.id == round_id)) or 0.0
        # Gold pairs come at the gold rate, and also once no ordinary pair is left.
        wants_gold = ordinary is None or rng.random() < gold_rate
        if round_id is not None and wants_gold:
            pair_id = _gold_pair(session, annotator_id, round_id, rng.random())
        if pair_id is None and ordinary is not None:
            pair_id = ordinary[0]
    if pair_id is None:
        return None
    left_sample = _lease(session, pair_id, annotator_id, now, rng.choice("AB"))
    return _assignment(session, pair_id, left_sample)


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
    _serialize(session)
    pair = session.get(Pair, pair_id)
    round_ = session.get(Round, pair.round_id) if pair else None
    if pair is None or round_ is None or round_.status != "open":
        raise PairUnavailable("This pair's round is closed; your judgment was not needed.")
    counts = choice != "skip"
    judgment = session.scalar(
        select(Judgment).where(Judgment.pair_id == pair_id, Judgment.annotator_id == annotator_id)
    )
    # How this submit changes the pair's count: +1 for a new vote, and also for a skip
    # turned into a vote on resubmit, which must respect the overlap just the same.
    delta = int(counts) - (0 if judgment is None else int(judgment.choice != "skip"))
    if delta > 0 and pair.gold_choice is None and pair.judgment_count >= round_.overlap:
        raise PairUnavailable(
            "Other annotators completed this pair meanwhile; here is the next one."
        )
    if judgment is None:
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
    return judgment


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
    _serialize(session)
    judgment = session.scalar(
        select(Judgment)
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(Judgment.annotator_id == annotator_id, Round.status == "open")
        .order_by(Judgment.created_at.desc(), Judgment.id.desc())
        .limit(1)
    )
    if judgment is None:
        return None
    pair_id = judgment.pair_id
    if judgment.choice != "skip":
        session.execute(
            update(Pair).where(Pair.id == pair_id).values(judgment_count=Pair.judgment_count - 1)
        )
    left_sample = judgment.left_sample
    session.delete(judgment)
    session.flush()
    # Shown again the way round it was judged. Any lease left from before is replaced: the
    # side must be the judgment's, and the new row's id puts it behind leases granted while
    # the judgment stood (if those fill the pair, _held_pair ends this one).
    release_lease(session, annotator_id, pair_id)
    _lease(session, pair_id, annotator_id, now or utcnow(), left_sample)
    return pair_id


def progress(session: Session, annotator_id: int, *, now: datetime | None = None) -> Progress:
    """Judgments this annotator made today (UTC), and the first open round's completion."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    mine = session.scalar(
        select(func.count(Judgment.id)).where(
            Judgment.annotator_id == annotator_id, Judgment.created_at >= midnight
        )
    )
    round_ = session.scalar(
        select(Round).where(Round.status == "open").order_by(Round.number).limit(1)
    )
    if round_ is None:
        return Progress(mine or 0, None, 0, 0)
    capped = case((Pair.judgment_count > round_.overlap, round_.overlap), else_=Pair.judgment_count)
    done, pairs = session.execute(
        select(func.coalesce(func.sum(capped), 0), func.count(Pair.id)).where(
            Pair.round_id == round_.id, Pair.gold_choice.is_(None)
        )
    ).one()
    return Progress(mine or 0, round_.number, int(done), int(pairs) * round_.overlap)
