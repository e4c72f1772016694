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

With "rows" on PostgreSQL, next_pair and the common submit (a first vote) are each one
call of a function that migration 0010 defines (prefloop_next_pair, prefloop_record_vote):
the same statements in the same order, run inside the caller's transaction, so one
round trip instead of five and three. (Migration 0011 writes the function's "not judged
by this annotator" as a count, which PostgreSQL cannot turn into a join that trusts a
stale estimate of the annotator's judgments; the meaning is the same.) A crowd's server
spends most of a submit's time on the client side of each statement and on switching
between the processes that wait for them, not on the work in the database. The Python
below stays the definition: SQLite and "global" run it, and the functions mirror it
statement by statement.

SQLite has a single writer whichever is chosen: every transaction here starts with a
write (`_begin`), which takes the database's write lock before anything is read.

Why the overlap can never be exceeded. A pair's `judgment_count` only grows in
record_judgment (an undo lowers it), by +1 for a new vote or a skip turned into one, and
only in a transaction that holds the pair's row lock from the check to the commit
(rows: `FOR NO KEY UPDATE`; global: the advisory lock; SQLite: the write lock). Under
PostgreSQL's READ COMMITTED a row read with `FOR ... UPDATE` is its newest committed
version, so the count the check `judgment_count < overlap` sees is the count at the
moment of the write: no other transaction can change it between the check and the
commit. A first vote (`_record_first`) makes check and write one statement, `UPDATE
pairs SET judgment_count = judgment_count + 1 WHERE id = :pair AND judgment_count <
overlap`: the update locks the row, and if another transaction changed it meanwhile,
PostgreSQL waits for that one to end and evaluates the condition again on the row it
committed. (pair, annotator) is unique in the schema: a resubmit finds its row (read
under the lock) and updates it, and of a double submit's two inserts the second waits
for the first and inserts nothing, so a +1 is never counted twice. The count is changed
in the same transaction as the row, so a failed or killed transaction changes neither.
The database functions change nothing here: a function runs in its caller's transaction
and each of its statements takes a fresh snapshot (they are VOLATILE), so its insert,
its conditional update and its locks behave exactly as the same statements sent one by
one.
Leases never enter this argument: they only decide which pair is offered, so a lease
granted on stale data can cost an annotator a refusal (PairUnavailable), never an extra
judgment. (They are granted under the pair's lock too, with the room checked again by
the statement that inserts the lease, so that refusal is rare: only an undo or a skip
turned into a vote makes one.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from db.engine import transaction
from db.errors import UserError
from db.models import CHOICES, Judgment, Pair, PairLease, Prompt, Round, Sample, utcnow
from db.ranking import normalize_ranking, shown_order, task_sample_ids, task_texts
from db.round_progress import NEWEST_JUDGMENT, note_judgment, round_done

LEASE_SECONDS = 10 * 60
LOCKINGS = ("rows", "global")
_ADVISORY_LOCK_KEY = 7_215_031  # an arbitrary constant naming "assignment" for PostgreSQL
# next_pair's tries at a locked candidate whose room went meanwhile, per open round.
_CLAIM_TRIES = 8
_locking = "rows"

# The statements are built once, here, with bound parameters: building SQLAlchemy
# expressions on every call cost more client CPU than the database spent running them.
_P, _R, _J, _L = (model.__table__ for model in (Pair, Round, Judgment, PairLease))
_PROMPTS = Prompt.__table__
_SAMPLE_A, _SAMPLE_B = Sample.__table__.alias("sample_a"), Sample.__table__.alias("sample_b")
_EARLIER = _L.alias("earlier")
_ANNOTATOR = bindparam("annotator", type_=Integer)
_NOW = bindparam("now", type_=_L.c.expires_at.type)
_EXPIRES = bindparam("expires", type_=_L.c.expires_at.type)
_PAIR = bindparam("pair", type_=Integer)
_OVERLAP = bindparam("overlap", type_=Integer)

_NOT_JUDGED = ~exists().where(_J.c.pair_id == _P.c.id, _J.c.annotator_id == _ANNOTATOR)
_NOT_LEASED_TO_ME = ~exists().where(_L.c.pair_id == _P.c.id, _L.c.annotator_id == _ANNOTATOR)
_LEASED_BY_OTHERS = (
    select(func.count(_L.c.id))
    .where(_L.c.pair_id == _P.c.id, _L.c.annotator_id != _ANNOTATOR, _L.c.expires_at > _NOW)
    .scalar_subquery()
)
_ROOM = or_(_P.c.gold_choice.is_not(None), _P.c.judgment_count + _LEASED_BY_OTHERS < _R.c.overlap)

# Judgments plus the live leases of others granted before this one: if that fills the
# overlap, this lease's judgment would be refused.
_AHEAD = (
    select(func.count(_EARLIER.c.id))
    .where(
        _EARLIER.c.pair_id == _L.c.pair_id,
        _EARLIER.c.annotator_id != _ANNOTATOR,
        _EARLIER.c.expires_at > _NOW,
        _EARLIER.c.id < _L.c.id,
    )
    .scalar_subquery()
)
_HELD = (
    select(
        _L.c.id,
        _L.c.pair_id,
        _L.c.left_sample,
        (_L.c.expires_at > _NOW).label("live"),
        ((_R.c.status == "open") & _NOT_JUDGED).label("usable"),
        or_(_P.c.gold_choice.is_not(None), _P.c.judgment_count + _AHEAD < _R.c.overlap).label(
            "room"
        ),
    )
    .select_from(_L.join(_P, _P.c.id == _L.c.pair_id).join(_R, _R.c.id == _P.c.round_id))
    .where(_L.c.annotator_id == _ANNOTATOR)
    .order_by(_L.c.expires_at.desc(), _L.c.id.desc())
)
_END_LEASES = delete(_L).where(_L.c.id.in_(bindparam("leases", expanding=True)))
_EXTEND_LEASE = (
    update(_L)
    .where(_L.c.pair_id == _PAIR, _L.c.annotator_id == _ANNOTATOR)
    .values(expires_at=_EXPIRES)
)
_RELEASE_LEASE = delete(_L).where(_L.c.pair_id == _PAIR, _L.c.annotator_id == _ANNOTATOR)
_OPEN_ROUNDS = (
    select(_R.c.id, _R.c.overlap, _R.c.gold_rate).where(_R.c.status == "open").order_by(_R.c.number)
)
_CANDIDATES = select(_P.c.id).where(
    _P.c.round_id == bindparam("round", type_=Integer),
    _P.c.judgment_count < _OVERLAP,
    _P.c.gold_choice.is_(None),
    _NOT_JUDGED,
    _NOT_LEASED_TO_ME,
    _P.c.judgment_count + _LEASED_BY_OTHERS < _OVERLAP,
)
_FULLEST_FIRST = (_P.c.round_id.desc(), _P.c.judgment_count.desc(), _P.c.id.desc())
_CANDIDATE = (
    _CANDIDATES.order_by(*_FULLEST_FIRST).limit(1).with_for_update(key_share=True, skip_locked=True)
)
_CANDIDATE_PASSING = (
    _CANDIDATES.where(_P.c.id.not_in(bindparam("passed", expanding=True)))
    .order_by(*_FULLEST_FIRST)
    .limit(1)
    .with_for_update(key_share=True, skip_locked=True)
)
_GOLD = select(_P.c.id).where(
    _P.c.round_id == bindparam("round", type_=Integer),
    _P.c.gold_choice.is_not(None),
    _NOT_JUDGED,
)
_GOLD_IDS = _GOLD.order_by(_P.c.id)
_NEW_LEASE_VALUES = select(_P.c.id, _ANNOTATOR, _EXPIRES, bindparam("side", type_=String(1))).where(
    _P.c.id == _PAIR,
    _R.c.id == _P.c.round_id,
    _R.c.status == "open",
    _NOT_JUDGED,
    _ROOM,
)
_NEW_LEASE = {
    dialect.dialect.name: dialect.insert(_L)
    .from_select(["pair_id", "annotator_id", "expires_at", "left_sample"], _NEW_LEASE_VALUES)
    .on_conflict_do_nothing(index_elements=["pair_id", "annotator_id"])
    .returning(_L.c.id)
    for dialect in (postgresql, sqlite)
}
_ASSIGNMENT = (
    select(
        _R.c.number,
        _PROMPTS.c.text,
        _SAMPLE_A.c.text,
        _SAMPLE_B.c.text,
        _R.c.guidelines,
        _R.c.kind,
    )
    .select_from(
        _P.join(_R, _R.c.id == _P.c.round_id)
        .join(_PROMPTS, _PROMPTS.c.id == _P.c.prompt_id)
        .join(_SAMPLE_A, _SAMPLE_A.c.id == _P.c.sample_a_id)
        .join(_SAMPLE_B, _SAMPLE_B.c.id == _P.c.sample_b_id)
    )
    .where(_P.c.id == _PAIR)
)
# The pair's row with its round's status and overlap, locked until commit (its newest
# committed version: see the module docstring).
_LOCK_PAIR = (
    select(
        _P.c.round_id, _P.c.gold_choice, _P.c.judgment_count, _R.c.status, _R.c.overlap, _R.c.kind
    )
    .select_from(_P.join(_R, _R.c.id == _P.c.round_id))
    .where(_P.c.id == _PAIR)
    .with_for_update(key_share=True, of=_P)
)
_MY_JUDGMENT = select(_J.c.id, _J.c.choice).where(
    _J.c.pair_id == _PAIR, _J.c.annotator_id == _ANNOTATOR
)
_JUDGMENT_FIELDS = (
    "choice",
    "left_sample",
    "strength",
    "rationale",
    "flags",
    "ms_spent",
    "ranking",
    "display_order",
)
_INSERT_JUDGMENT = insert(_J).returning(_J.c.id)
# record_judgment's common case in three statements instead of five (see _record_first):
# a first vote on a pair of an open pairwise round inserts its row, then raises the count
# only while the pair has room.
_VOTE_COLUMNS = (
    "pair_id",
    "annotator_id",
    "created_at",
    *_JUDGMENT_FIELDS,
)
_VOTE_VALUES = select(*(bindparam(name, type_=_J.c[name].type) for name in _VOTE_COLUMNS)).where(
    exists().where(
        _P.c.id == _PAIR,
        _R.c.id == _P.c.round_id,
        _R.c.status == "open",
        _R.c.kind == "pairwise",
    )
)
_INSERT_VOTE = {
    dialect.dialect.name: dialect.insert(_J)
    .from_select(list(_VOTE_COLUMNS), _VOTE_VALUES)
    .on_conflict_do_nothing(index_elements=["pair_id", "annotator_id"])
    .returning(_J.c.id)
    for dialect in (postgresql, sqlite)
}
_PAIR_OVERLAP = select(_R.c.overlap).where(_R.c.id == _P.c.round_id).scalar_subquery()
_PAIR_ROUND = select(_P.c.round_id, _PAIR_OVERLAP).where(_P.c.id == _PAIR)
_COUNT_VOTE = (
    update(_P)
    .where(
        _P.c.id == _PAIR,
        or_(_P.c.gold_choice.is_not(None), _P.c.judgment_count < _PAIR_OVERLAP),
    )
    .values(judgment_count=_P.c.judgment_count + 1)
    .returning(_P.c.round_id, _P.c.gold_choice, _P.c.judgment_count, _PAIR_OVERLAP)
)
_UPDATE_JUDGMENT = update(_J).where(_J.c.id == bindparam("judgment", type_=Integer))
_LATEST_JUDGMENT = (
    select(_J.c.id, _J.c.pair_id)
    .select_from(_J.join(_P, _P.c.id == _J.c.pair_id).join(_R, _R.c.id == _P.c.round_id))
    .where(_J.c.annotator_id == _ANNOTATOR, _R.c.status == "open")
    .order_by(_J.c.created_at.desc(), _J.c.id.desc())
    .limit(1)
)
_JUDGMENT_BY_ID = select(_J.c.choice, _J.c.left_sample, _J.c.display_order).where(
    _J.c.id == bindparam("judgment", type_=Integer)
)
_DELETE_JUDGMENT = delete(_J).where(_J.c.id == bindparam("judgment", type_=Integer))
_FIRST_OPEN = select(_R).where(_R.c.status == "open").order_by(_R.c.number).limit(1).subquery()
_PROGRESS = select(
    select(func.count(_J.c.id))
    .where(
        _J.c.annotator_id == _ANNOTATOR,
        _J.c.created_at >= bindparam("midnight", type_=_J.c.created_at.type),
    )
    .scalar_subquery(),
    select(_FIRST_OPEN.c.id).scalar_subquery(),
    select(_FIRST_OPEN.c.number).scalar_subquery(),
    select(_FIRST_OPEN.c.overlap).scalar_subquery(),
    NEWEST_JUDGMENT,
)
_COUNT_BY = (
    update(_P)
    .where(_P.c.id == _PAIR)
    .values(judgment_count=_P.c.judgment_count + bindparam("delta", type_=Integer))
)

# On PostgreSQL with row locks, next_pair and a first vote are each one call of a
# function that migration 0010 defines with the statements above (see _in_database).
_NEXT_PAIR_CALL = text(
    "SELECT * FROM prefloop_next_pair(CAST(:annotator AS integer), :now, :expires, "
    "CAST(:side AS varchar), CAST(:gold_roll AS double precision), "
    "CAST(:gold_pick AS double precision), CAST(:fallback_pick AS double precision), "
    "CAST(:tries AS integer))"
).bindparams(_NOW, _EXPIRES)
_RECORD_VOTE_FIELDS = (
    "created_at",
    "choice",
    "left_sample",
    "strength",
    "rationale",
    "flags",
    "ms_spent",
)
_RECORD_VOTE_CALL = text(
    "SELECT * FROM prefloop_record_vote(CAST(:pair AS integer), CAST(:annotator AS integer), "
    ":created_at, CAST(:choice AS varchar), CAST(:left_sample AS varchar), "
    "CAST(:strength AS integer), CAST(:rationale AS text), CAST(:flags AS json), "
    "CAST(:ms_spent AS integer))"
).bindparams(
    bindparam("created_at", type_=_J.c.created_at.type), bindparam("flags", type_=_J.c.flags.type)
)


class PairUnavailable(UserError):
    """The pair cannot take this judgment (its round closed, or others filled it)."""


_FILLED = "Other annotators completed this pair meanwhile; here is the next one."


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
    # "ranking" for a task of a ranking round (db.ranking): `responses` then holds its K
    # (sample id, text) in the order to show them, kept for as long as the lease.
    kind: str = "pairwise"
    responses: tuple[tuple[int, str], ...] = ()


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


def _begin(session: Session) -> Connection:
    """Take the locks this transaction needs before it reads anything; returns the
    session's connection, which the statements above run on.

    PostgreSQL with "global": the transaction-scoped advisory lock; with "rows": none here
    (each pair is locked where it is used). SQLite: a write that changes nothing, which
    takes the database's single write lock, so no other writer can change what this
    transaction is about to decide on.
    """
    session.flush()  # whatever the caller added before is visible to the statements
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        if _locking == "global":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
    else:
        connection.execute(update(_L).where(_L.c.id == -1).values(pair_id=_L.c.pair_id))
    return connection


def _in_database(connection: Connection | Engine) -> bool:
    """Whether next_pair and a first vote run as the database's functions (PostgreSQL
    with row locks), rather than statement by statement from here. "global" keeps the
    former path, for the comparison it exists for."""
    return connection.dialect.name == "postgresql" and _locking == "rows"


def _autocommit(session: Session) -> None:
    """Give the session, before its first statement, a connection on which each
    statement commits on its own."""
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def _assignment(
    connection: Connection,
    pair_id: int,
    left_sample: str,
    annotator_id: int,
    rng: random.Random,
) -> Assignment:
    row = connection.execute(_ASSIGNMENT, {"pair": pair_id}).one()
    return _shown(connection, pair_id, left_sample, annotator_id, rng, *row)


def _shown(
    connection: Connection,
    pair_id: int,
    left_sample: str,
    annotator_id: int,
    rng: random.Random,
    number: int,
    prompt: str,
    text_a: str,
    text_b: str,
    guidelines: str,
    kind: str,
) -> Assignment:
    """The Assignment of a leased pair from its round's and texts' columns (a ranking
    task also reads its K responses and the order they are shown in)."""
    responses: tuple[tuple[int, str], ...] = ()
    if kind == "ranking":
        texts = task_texts(connection, pair_id)
        order = shown_order(connection, pair_id, annotator_id, rng)
        responses = tuple((sample, texts[sample]) for sample in order)
    return Assignment(
        pair_id=pair_id,
        round_number=number,
        prompt=prompt,
        text_a=text_a,
        text_b=text_b,
        guidelines=guidelines,
        left_sample=left_sample,
        kind=kind,
        responses=responses,
    )


def _held_pair(connection: Connection, annotator_id: int, now: datetime) -> tuple[int, str] | None:
    """(pair id, side) of a pair this annotator was shown, still leased to them, not yet
    judged, and with room for their judgment, its lease extended. Their leases on pairs
    without room end here, and so do their expired ones (so that every pair without a
    lease row of theirs is one they may be offered afresh)."""
    held = connection.execute(_HELD, {"annotator": annotator_id, "now": now}).all()
    ended = [row.id for row in held if not row.live or (row.usable and not row.room)]
    if ended:
        connection.execute(_END_LEASES, {"leases": ended})
    for row in held:
        if row.live and row.usable and row.room:
            expires = now + timedelta(seconds=LEASE_SECONDS)
            connection.execute(
                _EXTEND_LEASE,
                {"pair": row.pair_id, "annotator": annotator_id, "expires": expires},
            )
            return row.pair_id, row.left_sample
    return None


def _new_lease(
    connection: Connection, pair_id: int, annotator_id: int, now: datetime, left_sample: str
) -> bool:
    """Lease the pair to the annotator if it still has room for them (checked by the
    insert itself, on the newest committed rows: the caller holds the pair's lock, or the
    pair is gold); False if not, or if they already hold a lease row on it."""
    parameters = {
        "pair": pair_id,
        "annotator": annotator_id,
        "now": now,
        "expires": now + timedelta(seconds=LEASE_SECONDS),
        "side": left_sample,
    }
    statement = _NEW_LEASE[connection.dialect.name]
    return connection.execute(statement, parameters).first() is not None


def _claim_ordinary(
    connection: Connection,
    annotator_id: int,
    now: datetime,
    round_id: int,
    overlap: int,
    side: str,
) -> int | None:
    """Lease this annotator the round's ordinary pair closest to done that has room for
    them; its id, or None.

    The query walks the index (round_id, judgment_count, id) backwards from the fullest
    pairs and stops at the first that fits and is not locked by another transaction
    (SKIP LOCKED): no sort over the round's pairs, and no waiting behind another
    annotator's pair. The lease's own insert checks the room again, since another
    transaction may have leased the pair between this query's snapshot and its lock;
    then the next candidate is tried.
    """
    parameters: dict[str, Any] = {
        "round": round_id,
        "overlap": overlap,
        "annotator": annotator_id,
        "now": now,
    }
    passed: list[int] = []
    for _ in range(_CLAIM_TRIES):
        statement = _CANDIDATE_PASSING if passed else _CANDIDATE
        pair_id = connection.execute(statement, parameters | {"passed": passed}).scalar()
        if pair_id is None:
            return None
        if _new_lease(connection, pair_id, annotator_id, now, side):
            return pair_id
        passed.append(pair_id)
    return None


def _gold_pair(connection: Connection, annotator_id: int, round_id: int, draw: float) -> int | None:
    """The gold pair the `draw` fraction along this annotator's unjudged ones, by id."""
    unjudged = connection.execute(_GOLD_IDS, {"round": round_id, "annotator": annotator_id})
    ids = unjudged.scalars().all()
    return ids[int(draw * len(ids))] if ids else None


def release_lease(session: Session, annotator_id: int, pair_id: int) -> None:
    """End this annotator's lease on the pair, if any: the pair is free for others."""
    session.connection().execute(_RELEASE_LEASE, {"pair": pair_id, "annotator": annotator_id})


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
    # Drawn up front, the same four on either path: the side a new pair is shown on, the
    # roll against the gold rate, and where to pick among gold pairs (at the rate, and
    # once no ordinary pair is left).
    side, gold_roll, gold_pick, fallback_pick = (
        rng.choice("AB"),
        rng.random(),
        rng.random(),
        rng.random(),
    )
    connection = _begin(session)
    if _in_database(connection):
        parameters = {
            "annotator": annotator_id,
            "now": now,
            "expires": now + timedelta(seconds=LEASE_SECONDS),
            "side": side,
            "gold_roll": gold_roll,
            "gold_pick": gold_pick,
            "fallback_pick": fallback_pick,
            "tries": _CLAIM_TRIES,
        }
        row = connection.execute(_NEXT_PAIR_CALL, parameters).one_or_none()
        return (
            None if row is None else _shown(connection, row[0], row[1], annotator_id, rng, *row[2:])
        )
    held = _held_pair(connection, annotator_id, now)
    if held is not None:
        return _assignment(connection, *held, annotator_id, rng)
    for round_id, overlap, gold_rate in connection.execute(_OPEN_ROUNDS).all():
        # Gold pairs come at the gold rate, and also once no ordinary pair is left.
        if gold_roll < (gold_rate or 0.0):
            gold = _gold_pair(connection, annotator_id, round_id, gold_pick)
            if gold is not None and _new_lease(connection, gold, annotator_id, now, side):
                return _assignment(connection, gold, side, annotator_id, rng)
        pair_id = _claim_ordinary(connection, annotator_id, now, round_id, overlap, side)
        if pair_id is None:
            pair_id = _gold_pair(connection, annotator_id, round_id, fallback_pick)
            if pair_id is None or not _new_lease(connection, pair_id, annotator_id, now, side):
                continue
        return _assignment(connection, pair_id, side, annotator_id, rng)
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
    ranking: list[list[int]] | None = None,
    display_order: list[int] | None = None,
) -> int:
    """Store the judgment and return its id; a second submit for the same pair updates
    it, never adds one.

    `choice` names the stored pair's sample (A or B), whichever side it was shown on. A
    task of a ranking round takes choice "ranking" with `ranking` (groups of its sample
    ids, best first, every response once: db.ranking) and `display_order` (its sample ids
    as shown), or "skip"; `left_sample` is then unused (stored as "A").
    """
    _check_form(choice, left_sample, strength)
    connection = _begin(session)
    if choice != "ranking":
        fields = _judgment_fields(choice, left_sample, strength, rationale, flags, ms_spent)
        judgment_id = _record_first(session, connection, annotator_id, pair_id, fields)
        if judgment_id is not None:
            return judgment_id
    mine = {"pair": pair_id, "annotator": annotator_id}
    pair = connection.execute(_LOCK_PAIR, mine).one_or_none()
    if pair is None or pair.status != "open":
        raise PairUnavailable("This pair's round is closed; your judgment was not needed.")
    if pair.kind == "ranking":
        ranking, display_order = _checked_ranking(
            connection, pair_id, choice, ranking, display_order
        )
    elif choice == "ranking":
        raise UserError("This is a pair of two responses; choose A, B, tie or both bad.")
    else:
        ranking = display_order = None
    # Read after the lock, so a double submit's first half is seen once it committed.
    earlier = connection.execute(_MY_JUDGMENT, mine).one_or_none()
    # How this submit changes the pair's count: +1 for a new vote, and also for a skip
    # turned into a vote on resubmit, which must respect the overlap just the same.
    counts = choice != "skip"
    delta = int(counts) - (0 if earlier is None else int(earlier.choice != "skip"))
    gold = pair.gold_choice is not None
    if delta > 0 and not gold and pair.judgment_count >= pair.overlap:
        raise PairUnavailable(_FILLED)
    fields = _judgment_fields(
        choice, left_sample, strength, rationale, flags, ms_spent, ranking, display_order
    )
    if earlier is None:
        judgment_id = connection.execute(
            _INSERT_JUDGMENT, fields | {"pair_id": pair_id, "annotator_id": annotator_id}
        ).scalar_one()
    else:
        judgment_id = earlier.id
        connection.execute(_UPDATE_JUDGMENT.values(**fields), {"judgment": judgment_id})
    if delta:
        connection.execute(_COUNT_BY, {"pair": pair_id, "delta": delta})
    connection.execute(_RELEASE_LEASE, mine)
    if earlier is None or delta:
        change = 0 if gold else _capped_change(pair.judgment_count, delta, pair.overlap)
        new_id = judgment_id if earlier is None else None
        note_judgment(session, pair.round_id, pair.overlap, change, new_id)
    return judgment_id


def _check_form(choice: str, left_sample: str, strength: int | None) -> None:
    if choice not in CHOICES:
        raise UserError(f"Unknown choice {choice!r}; use one of: {', '.join(CHOICES)}.")
    if left_sample not in ("A", "B"):
        raise UserError(f"left_sample is {left_sample!r}; it must be A or B.")
    if strength is not None and not 1 <= strength <= 3:
        raise UserError(f"Strength {strength} is out of range; use 1, 2 or 3.")


def _judgment_fields(
    choice: str,
    left_sample: str,
    strength: int | None,
    rationale: str,
    flags: dict[str, Any] | None,
    ms_spent: int,
    ranking: list[list[int]] | None = None,
    display_order: list[int] | None = None,
) -> dict[str, Any]:
    values = (
        choice,
        left_sample,
        strength,
        rationale,
        flags or {},
        max(0, int(ms_spent)),
        ranking,
        display_order,
    )
    return dict(zip(_JUDGMENT_FIELDS, values, strict=True)) | {"created_at": utcnow()}


def _record_first(
    session: Session,
    connection: Connection,
    annotator_id: int,
    pair_id: int,
    fields: dict[str, Any],
) -> int | None:
    """record_judgment's common case, the annotator's first judgment of a pair in an open
    pairwise round, in two or three statements; the judgment's id, or None when it is not
    that case (a resubmit, another round kind, a closed round), which the caller decides
    under the pair's lock instead.

    The row is inserted first, without the pair's lock: (pair, annotator) is unique, so a
    double submit's second insert waits for the first and then inserts nothing (None). A
    vote's +1 is then made by an update that matches only while the pair has room. An
    update takes the pair's row lock itself and, under READ COMMITTED, checks its
    condition again on the newest committed row if another transaction changed it
    meanwhile: the check and the write are one step (see the module docstring). No room:
    the row is deleted again before the refusal, so a caller that commits anyway stores
    nothing.
    """
    if _in_database(connection):
        return _record_first_in_database(session, connection, annotator_id, pair_id, fields)
    values = fields | {"pair_id": pair_id, "annotator_id": annotator_id, "pair": pair_id}
    statement = _INSERT_VOTE[connection.dialect.name]
    judgment_id = connection.execute(statement, values).scalar()
    if judgment_id is None:
        return None
    if fields["choice"] == "skip":
        round_id, overlap = connection.execute(_PAIR_ROUND, {"pair": pair_id}).one()
        change = 0
    else:
        counted = connection.execute(_COUNT_VOTE, {"pair": pair_id}).one_or_none()
        if counted is None:
            connection.execute(_DELETE_JUDGMENT, {"judgment": judgment_id})
            raise PairUnavailable(_FILLED)
        round_id, gold_choice, count, overlap = counted
        change = 0 if gold_choice is not None else _capped_change(count - 1, 1, overlap)
    connection.execute(_RELEASE_LEASE, {"pair": pair_id, "annotator": annotator_id})
    note_judgment(session, round_id, overlap, change, judgment_id)
    return judgment_id


def _record_first_in_database(
    session: Session,
    connection: Connection,
    annotator_id: int,
    pair_id: int,
    fields: dict[str, Any],
) -> int | None:
    """_record_first as one call of prefloop_record_vote (migration 0010), which runs
    the same statements in this transaction."""
    parameters = {name: fields[name] for name in _RECORD_VOTE_FIELDS} | {
        "pair": pair_id,
        "annotator": annotator_id,
    }
    outcome, judgment_id, round_id, overlap, change = connection.execute(
        _RECORD_VOTE_CALL, parameters
    ).one()
    if outcome == "other":
        return None
    if outcome == "filled":
        raise PairUnavailable(_FILLED)
    note_judgment(session, round_id, overlap, change, judgment_id)
    return judgment_id


def _checked_ranking(
    connection: Connection,
    pair_id: int,
    choice: str,
    ranking: list[list[int]] | None,
    display_order: list[int] | None,
) -> tuple[list[list[int]] | None, list[int] | None]:
    """The ranking and display order to store for a ranking task, checked against its
    samples (a skip stores the order shown and no ranking)."""
    if choice not in ("ranking", "skip"):
        raise UserError(
            f"This task ranks several responses; submit choice 'ranking' or 'skip', not {choice!r}."
        )
    samples = task_sample_ids(connection, pair_id)
    if display_order is not None:
        shown = [int(sample) for sample in display_order]
        if sorted(shown) != sorted(samples):
            raise UserError("display_order must list each of the task's responses once.")
        display_order = shown
    if choice == "skip":
        return None, display_order
    if ranking is None:
        raise UserError("A ranking judgment needs the ranking: order every response first.")
    return normalize_ranking(ranking, samples), display_order


def _capped_change(count: int, delta: int, overlap: int) -> int:
    """How the round's progress changes when a pair's count moves by `delta`: a pair
    counts at most `overlap` judgments."""
    return min(count + delta, overlap) - min(count, overlap)


def _one_call_session(sessions: sessionmaker[Session]) -> Session | None:
    """A session whose statements each commit on their own (autocommit), when the
    functions of migration 0010 decide alone (PostgreSQL with row locks); else None.

    A function call is then its own transaction: its row locks end with the statement,
    not a round trip later when the client's COMMIT arrives, so annotators voting on the
    same pair do not queue behind each other's network and scheduling delays, and each
    operation is one round trip instead of three (BEGIN, the call, COMMIT). Exactness
    is unchanged: the whole call was already one atomic step (see the docstring above).
    """
    session = sessions()
    if _in_database(session.get_bind().engine):
        _autocommit(session)
        return session
    session.close()
    return None


def fetch_next_pair(
    sessions: sessionmaker[Session],
    annotator_id: int,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Assignment | None:
    """What the annotate page calls: next_pair in a transaction of its own (on
    PostgreSQL with row locks, its one call; a ranking task's stored display order is
    then a second statement, which a reload would redo)."""
    one_call = _one_call_session(sessions)
    if one_call is not None:
        with one_call:
            return next_pair(one_call, annotator_id, now=now, rng=rng)
    with transaction(sessions) as session:
        return next_pair(session, annotator_id, now=now, rng=rng)


def submit_judgment(
    sessions: sessionmaker[Session], annotator_id: int, pair_id: int, **judgment: Any
) -> None:
    """What the annotate page calls: record_judgment (same keywords: choice, left_sample,
    strength, rationale, flags, ms_spent) in a transaction of its own. On PairUnavailable
    that transaction rolls back, lease and all, so the lease is ended in a second one
    before the refusal goes on to the caller.

    On PostgreSQL with row locks a first vote is one autocommitted call; anything else (a
    resubmit, a ranking, a closed round) goes on to the transaction below."""
    if judgment.get("choice") != "ranking" and (one_call := _one_call_session(sessions)):
        with one_call:
            if _first_vote(one_call, annotator_id, pair_id, **judgment) is not None:
                one_call.commit()  # already committed: this applies its progress change
                return
    try:
        with transaction(sessions) as session:
            record_judgment(session, annotator_id, pair_id, **judgment)
    except PairUnavailable:
        with transaction(sessions) as session:
            release_lease(session, annotator_id, pair_id)
        raise


def _first_vote(
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
    ranking: list[list[int]] | None = None,
    display_order: list[int] | None = None,
) -> int | None:
    """record_judgment's first-vote call (its keywords) on an autocommit session; None
    when it is not that case (a ranking task's skip among them, which is why `ranking`
    and `display_order` are taken and left to record_judgment). A refusal has stored
    nothing: the lease is ended (its own statement) and PairUnavailable goes on."""
    _check_form(choice, left_sample, strength)
    fields = _judgment_fields(choice, left_sample, strength, rationale, flags, ms_spent)
    connection = session.connection()
    try:
        return _record_first_in_database(session, connection, annotator_id, pair_id, fields)
    except PairUnavailable:
        release_lease(session, annotator_id, pair_id)
        raise


def undo_last(session: Session, annotator_id: int, *, now: datetime | None = None) -> int | None:
    """Remove this annotator's latest judgment in an open round and lease its pair back to
    them, so it is the next pair they see. Returns the pair id, or None."""
    connection = _begin(session)
    latest = connection.execute(_LATEST_JUDGMENT, {"annotator": annotator_id}).first()
    if latest is None:
        return None
    pair_id = latest.pair_id
    pair = connection.execute(_LOCK_PAIR, {"pair": pair_id}).one()
    # Read again under the pair's lock: a second tab may have changed or undone it.
    judgment = connection.execute(_JUDGMENT_BY_ID, {"judgment": latest.id}).one_or_none()
    if judgment is None:
        return None
    if judgment.choice != "skip":
        connection.execute(_COUNT_BY, {"pair": pair_id, "delta": -1})
        if pair.gold_choice is None:
            change = _capped_change(pair.judgment_count, -1, pair.overlap)
            note_judgment(session, pair.round_id, pair.overlap, change, None)
    connection.execute(_DELETE_JUDGMENT, {"judgment": latest.id})
    # Shown again the way round it was judged. Any lease left from before is replaced: the
    # side must be the judgment's, and the new row's id puts it behind leases granted while
    # the judgment stood (if those fill the pair, _held_pair ends this one).
    mine = {"pair": pair_id, "annotator": annotator_id}
    connection.execute(_RELEASE_LEASE, mine)
    expires = (now or utcnow()) + timedelta(seconds=LEASE_SECONDS)
    connection.execute(
        insert(_L),
        {
            "pair_id": pair_id,
            "annotator_id": annotator_id,
            "expires_at": expires,
            "left_sample": judgment.left_sample,
            "display_order": judgment.display_order,
        },
    )
    return pair_id


def read_progress(
    sessions: sessionmaker[Session], annotator_id: int, *, now: datetime | None = None
) -> Progress:
    """What the page's progress bar calls: `progress` in a session of its own. On
    PostgreSQL its statement (two when the round's sum is read afresh, each whole in
    itself) runs without a transaction around it, which saves the BEGIN and ROLLBACK
    round trips of a read that is drawn on every submit."""
    with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            _autocommit(session)
        return progress(session, annotator_id, now=now)


def progress(session: Session, annotator_id: int, *, now: datetime | None = None) -> Progress:
    """Judgments this annotator made today (UTC), and the first open round's completion
    (from db.round_progress: exact for this process's judgments and others' new ones,
    within a few seconds for the rest)."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # One statement: the page draws this on every submit.
    mine, round_id, number, overlap, newest = session.execute(
        _PROGRESS, {"annotator": annotator_id, "midnight": midnight}
    ).one()
    if round_id is None:
        return Progress(mine, None, 0, 0)
    done, pairs = round_done(session, round_id, overlap, newest)
    return Progress(mine, number, done, pairs * overlap)
