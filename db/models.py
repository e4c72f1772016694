"""The schema: one class per table. Alembic revisions under migrations/ create it.

Enumerations are plain strings with CHECK constraints rather than native enum types,
so that adding a value later is a one-line migration on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql import expression

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USER_ROLES = ("annotator", "lead")
MODEL_KINDS = ("policy", "reward")
ROUND_STATUSES = ("open", "closed")
PAIR_STRATEGIES = ("random", "new_vs_previous", "uncertainty", "imported", "arena")
# How the annotate page shows a round's responses: plain text, or Markdown made safe
# (annotate_app/markdown_safe.py).
RENDER_MODES = ("text", "markdown")
# A ranking round's task shows K responses (3..6) and takes one judgment with the whole
# order ("ranking"); a pairwise round's pair shows two.
ROUND_KINDS = ("pairwise", "ranking")
RANK_SIZES = (3, 6)  # the smallest and largest K
CHOICES = ("A", "B", "tie", "both_bad", "skip", "ranking")
# "round" is the lead's retraining job: close a round, export, train, evaluate, generate.
RUN_KINDS = ("sft", "reward", "ppo", "dpo", "rloo", "grpo", "round")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are UTC and timezone-aware in Python on every backend.

    SQLite has no time zone type, so values are stored as naive UTC and the zone is
    put back on the way out; comparisons with `utcnow()` then work everywhere.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use db.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (_one_of("role", USER_ROLES, "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Password checks since the last success (db.auth reserves one before each check),
    # forgotten a day after the last of them; 0 again once the account locks.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    failed_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """Failed logins under a name that has no account, counted like users.failed_logins
    so that the lockout cannot tell which names exist. Keyed by a hash of the name: people
    type passwords into the name field, and those must not be stored as they were typed."""

    __tablename__ = "login_failures"

    # sha256 of the stripped name, hex.
    name_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    # Rows whose last failure is older than db.auth.FORGET_FAILURES_AFTER are deleted.
    failed_login_at: Mapped[datetime] = mapped_column(index=True)


class LoginToken(Base):
    """A browser that logged in and may come back without the password until it expires.

    Only a hash of the token is stored: the token itself lives in the browser's cookie,
    so a copy of the database does not log anyone in.
    """

    __tablename__ = "login_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # sha256 of the token, hex.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200))
    # sha256 of the exact text: the same prompt imported twice is one row.
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    split: Mapped[str] = mapped_column(String(20), default="train", index=True)
    # Whether generation wraps this prompt in the policy's chat template.
    chat: Mapped[bool] = mapped_column(Boolean, default=False)
    # A conversation's turns ([{"role", "content"}], ending with a user turn), or None for
    # a plain prompt; `text` then holds a readable rendering (db/conversations.py).
    # none_as_null: a plain prompt's None is SQL NULL (as rows from before 0008 have), not
    # the JSON value null, so "IS NULL" finds every plain prompt.
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(
        JSON(none_as_null=True), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (_one_of("kind", MODEL_KINDS, "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # A local folder, or a hub id for users whose machines can reach a hub.
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", use_alter=True))
    training_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", use_alter=True)
    )
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The current policy is the one promoted last; unpromoted policies are candidates.
    promoted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[Model | None] = relationship(remote_side=[id])


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (
        _one_of("status", ROUND_STATUSES, "status"),
        CheckConstraint("overlap >= 1", name="overlap_positive"),
        CheckConstraint("gold_rate >= 0 AND gold_rate <= 1", name="gold_rate_fraction"),
        _one_of("render", RENDER_MODES, "render"),
        _one_of("kind", ROUND_KINDS, "kind"),
        CheckConstraint(
            "(kind = 'pairwise' AND rank_k IS NULL) OR "
            f"(kind = 'ranking' AND rank_k BETWEEN {RANK_SIZES[0]} AND {RANK_SIZES[1]})",
            name="rank_k",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    status: Mapped[str] = mapped_column(String(20), default="open")
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    previous_policy_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    overlap: Mapped[int] = mapped_column(Integer, default=3)
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    # An arena round's plan, fixed when it is created so that a resumed generation keeps
    # its balance: {"policies": [model ids], "weights": [one per policy pair], "seed": n}.
    arena_plan: Mapped[dict[str, Any] | None]
    render: Mapped[str] = mapped_column(String(20), default="text", server_default="text")
    kind: Mapped[str] = mapped_column(String(20), default="pairwise", server_default="pairwise")
    # Responses per task of a ranking round; NULL for a pairwise round.
    rank_k: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]

    policy: Mapped[Model | None] = relationship(foreign_keys=[policy_id])
    previous_policy: Mapped[Model | None] = relationship(foreign_keys=[previous_policy_id])


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    # temperature, top_p, max_new_tokens, chat_template: everything needed to redo it.
    decoding: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    # False when generation hit max_new_tokens before the end-of-sequence token.
    finished: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prompt: Mapped[Prompt] = relationship()
    policy: Mapped[Model] = relationship()


class Pair(Base):
    __tablename__ = "pairs"
    __table_args__ = (
        _one_of("strategy", PAIR_STRATEGIES, "strategy"),
        CheckConstraint("sample_a_id <> sample_b_id", name="distinct_samples"),
        CheckConstraint(
            "gold_choice IS NULL OR gold_choice IN ('A', 'B', 'tie', 'both_bad', 'ranking')",
            name="gold_choice",
        ),
        # The next-pair query walks a round's pairs by how many judgments they have.
        Index("ix_pairs_round_judgment_count", "round_id", "judgment_count", "id"),
        # A round's gold pairs (drawn at the gold rate), and a round's progress read from
        # the index alone: judgment_count is in it.
        Index("ix_pairs_round_gold", "round_id", "gold_choice", "judgment_count"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    sample_a_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    sample_b_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    strategy: Mapped[str] = mapped_column(String(30), default="random")
    # Set by a lead for gold pairs; annotators are scored against it.
    gold_choice: Mapped[str | None] = mapped_column(String(20))
    # A gold ranking task (gold_choice "ranking"): the known order best to worst as groups
    # of sample ids, [[best]] alone when only the best is known (db.ranking).
    gold_ranking: Mapped[list[Any] | None] = mapped_column(JSON)
    # Judgments other than skips, kept by db.judgments so that finding the next pair
    # for an annotator never counts a million rows.
    judgment_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    round: Mapped[Round] = relationship()
    prompt: Mapped[Prompt] = relationship()
    sample_a: Mapped[Sample] = relationship(foreign_keys=[sample_a_id])
    sample_b: Mapped[Sample] = relationship(foreign_keys=[sample_b_id])


class TaskSample(Base):
    """The K responses of a ranking task (a `pairs` row of a ranking round, whose sample_a
    and sample_b are its first two), by position."""

    __tablename__ = "task_samples"
    __table_args__ = (
        UniqueConstraint("pair_id", "position", name="uq_task_samples_pair_position"),
        UniqueConstraint("pair_id", "sample_id", name="uq_task_samples_pair_sample"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))


class Judgment(Base):
    __tablename__ = "judgments"
    __table_args__ = (
        # One judgment per pair and annotator: a resubmitted form updates, never adds.
        UniqueConstraint("pair_id", "annotator_id", name="uq_judgments_pair_annotator"),
        _one_of("choice", CHOICES, "choice"),
        _one_of("left_sample", ("A", "B"), "left_sample"),
        CheckConstraint("strength IS NULL OR strength BETWEEN 1 AND 3", name="strength"),
        # An annotator's latest judgment (undo) and today's count.
        Index("ix_judgments_annotator_created", "annotator_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # Always in terms of the stored pair (A/B), whatever side each was shown on.
    choice: Mapped[str] = mapped_column(String(20))
    strength: Mapped[int | None] = mapped_column(Integer)
    rationale: Mapped[str] = mapped_column(Text, default="")
    flags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    left_sample: Mapped[str] = mapped_column(String(1))
    ms_spent: Mapped[int] = mapped_column(Integer, default=0)
    # A ranking (choice "ranking"): the order best to worst as groups of sample ids, tied
    # responses in one group ([[12], [15, 11], [14]]), and the sample ids in the order
    # they were shown. NULL for pairwise judgments.
    ranking: Mapped[list[Any] | None] = mapped_column(JSON)
    display_order: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PairLease(Base):
    """A pair shown to an annotator and not yet judged, held until it expires, so that an
    abandoned tab does not starve a pair and annotators do not over-collect it."""

    __tablename__ = "pair_leases"
    __table_args__ = (
        UniqueConstraint("pair_id", "annotator_id", name="uq_pair_leases_pair_annotator"),
        _one_of("left_sample", ("A", "B"), "left_sample"),
    )

    # Ids grow with the time a lease was granted: when a pair holds more leases than it
    # has room for (an undo, a skip turned into a vote), the earliest ones keep it.
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires_at: Mapped[datetime]
    # Which stored sample the annotator sees on the left, fixed for the lease's life so
    # that a reload, a second tab or an undo shows the pair the same way round.
    left_sample: Mapped[str] = mapped_column(String(1))
    # A ranking task's sample ids in the order shown, fixed like left_sample.
    display_order: Mapped[list[Any] | None] = mapped_column(JSON)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        _one_of("kind", RUN_KINDS, "kind"),
        _one_of("status", RUN_STATUSES, "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log_path: Mapped[str | None] = mapped_column(Text)
    export_id: Mapped[int | None] = mapped_column(ForeignKey("exports.id"))
    output_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The round whose judgments the run learns from (a retraining job: the round it closes).
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    # A retraining job's steps (reward, ppo...) point at the job.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"), index=True)
    # How many times a worker has started it; a retry after a crash resumes.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # host:pid of the worker that holds it, while it runs.
    worker: Mapped[str | None] = mapped_column(String(200))
    # Set by a lead; the worker holding the run stops it and marks it cancelled.
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=expression.false()
    )


class Evaluation(Base):
    """`rlhf evaluate policy`: one policy measured on the held-out prompts, maybe against
    another; the figures here, the full report (Markdown, JSON, plots) in report_path."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    against_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    # The round the policy was trained from (the report of that round's retraining).
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    report_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
