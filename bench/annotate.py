"""Benchmark what the annotate page does on submit: record the judgment, fetch the next pair.

The page runs two transactions per submit, and so does this benchmark: one calling
`db.judgments.record_judgment` for the annotator's current pair, then one calling
`db.judgments.next_pair`. One operation is both; its time is the two transactions
together, commits included (the server-side time of a submit, without Streamlit's
rendering), and each function's share is reported too. It measures:

- sqlite single: one new annotator doing `--operations` operations (default 500) after
  `--warmup` (default 20) on SQLite: p50, p95, p99 and max, of the operation and of
  each function. Target: p95 of the operation under 20 ms. `progress` (the page's
  progress bar) is timed 50 times afterwards, for information; it is not part of the
  operation.
- sqlite N: `--sqlite-annotators` (default 8) annotators at once on the same SQLite
  database, `--sqlite-concurrent-operations` (default 50) operations each, because SQLite
  is the default for small teams.
- pg single and pg N: one annotator, then `--pg-annotators` (default 32) at once, on
  PostgreSQL, `--pg-operations` (default 100) operations each: latency and throughput.
  The single run separates the cost of an operation from the queueing behind the
  assignment lock that N annotators submitting back to back cause.

In the concurrent runs each annotator does 5 untimed operations first, and all stop at
`--max-seconds` (default 600) if not done by then, which the report says; ops/s is
submits per second of wall time, with no thinking time between submits. Each run
records the cores other processes kept busy meanwhile (other load): on a shared machine
that inflates latencies, and the single-user SQLite run is flagged when it exceeds 0.25.

Concurrent annotators are threads of one process sharing one engine, as in the Streamlit
server, each transaction in its own session; database waits release the GIL. The
PostgreSQL engine has a pool of one connection per annotator (`make_engine`'s default
pool holds 15). Each annotator also counts the times next_pair gave back a pair it had
already judged (reshown). After each run the database is checked: lost judgments (a judgment
whose transaction committed but which is not in the table with that choice), unexpected
ones (in the table but never committed by the benchmark), duplicated ones (more than one
row for a pair and annotator), over-collected pairs (non-gold pairs with more non-skip
judgments than the round's overlap) and pairs whose `judgment_count` differs from their
non-skip judgments. All must be 0. `record_judgment` raising `PairUnavailable` (others
filled the pair meanwhile) is correct behaviour, counted as refused; the annotator then
fetches the next pair, as the page does. Any other exception is counted as an error.

The synthetic database, the same on both backends (seeded RNG, SQLAlchemy Core bulk
inserts, not timed): one open round of `--pairs` pairs (default 100,000) with overlap 12
and gold rate 0.05, 1% of them gold, and `--judgments` judgments (default 1,000,000) by
100 earlier annotators: a large round a few weeks into collection. Each earlier annotator
has judged about 10,000 pairs and, at the gold rate, about 500 gold pairs, so a gold pair
carries about 50 judgments. The ordinary pairs share the rest: most have their 12
judgments (5% of them skips, which do not count, so many still need one more), the others
0 to 11; about three quarters of the round's judgments are in, so next_pair always finds
work. `pairs.judgment_count` is each pair's non-skip judgments, as `record_judgment`
keeps it. The benchmark annotators are new accounts. After the load PostgreSQL is
vacuumed and analyzed, as autovacuum would do, and SQLite's write-ahead log is
checkpointed; SQLite is not analyzed, as the app never does it.

PostgreSQL comes from `RLHF_TEST_PG_URL`, else `--pg-url`; it must be an empty
database. Without either the PostgreSQL run is skipped, saying so.

Run it from the repository root:

    python bench/annotate.py       # SQLite only; prints a table, writes bench/results/annotate.json
    scripts/with_postgres.sh .venv/bin/python bench/annotate.py    # SQLite and PostgreSQL
    python bench/annotate.py --pairs 10000 --judgments 100000 --operations 100   # a quick look
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import gc
import hashlib
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from common import CpuClock, benchmark_main, cpu_clock, machine
from sqlalchemy import Connection, Engine, Table, create_engine, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from db.engine import redact, session_factory, transaction
from db.judgments import Assignment, PairUnavailable, next_pair, progress, record_judgment
from db.models import Base
from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "annotate.json"
TARGET_P95_MS = 20.0
SEED = 0
OVERLAP = 12
GOLD_RATE = 0.05  # the round's share of gold pairs shown
GOLD_SHARE = 0.01  # the share of the round's pairs that are gold
HISTORICAL = 100  # annotators who made the existing judgments: user ids 1..100
GOLD_JUDGMENTS = (40, 60)  # earlier judgments per gold pair
SKIP_P = 0.05
PAIRS_PER_PROMPT = 3
CHUNK = 50_000  # rows per bulk insert
CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
CHOICE_WEIGHTS = {"A": 0.42, "B": 0.42, "tie": 0.06, "both_bad": 0.05, "skip": SKIP_P}
_WORD_TEXT = """the a model answer question because however which could would should data result
    first second then finally example clearly simple good better best poor wrong right
    reason step value number text story movie review plot actor scene ending character
    short long summary explain describe compare list write code function return error
    test user prompt response helpful honest harmless safe detail context point idea
    we you they it is are was were be have has do does not and or but if when while"""
WORDS = np.array(_WORD_TEXT.split())
TEXT_WORDS = (35, 65)  # a response: about 200 to 400 characters
PROMPT_WORDS = (15, 30)
DISTURBED_CORES = 0.25  # other processes' load above which the single-user run is flagged
CONCURRENT_WARMUP = 5  # untimed operations per annotator before a concurrent run's timed ones
GUIDELINES = "Prefer the answer that is more helpful, honest and harmless. " * 8


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="latency of record_judgment + next_pair on SQLite and PostgreSQL"
    )
    add = parser.add_argument
    add("--pairs", type=int, default=100_000, help="pairs in the round (default 100000)")
    add("--judgments", type=int, default=1_000_000, help="earlier judgments (default 1000000)")
    add("--operations", type=int, default=500, help="timed operations, SQLite single user")
    add("--warmup", type=int, default=20, help="untimed operations first (default 20)")
    add("--sqlite-annotators", type=int, default=8, help="concurrent SQLite annotators")
    add("--sqlite-concurrent-operations", type=int, default=50, help="operations each")
    add("--pg-annotators", type=int, default=32, help="concurrent PostgreSQL annotators")
    add("--pg-operations", type=int, default=100, help="operations each (default 100)")
    add(
        "--max-seconds",
        type=float,
        default=600.0,
        help="stop a concurrent run's annotators after this long (default 600)",
    )
    add("--pg-url", default="", help="an empty PostgreSQL database (RLHF_TEST_PG_URL wins)")
    add(
        "--workspace",
        type=Path,
        default=None,
        help="build the SQLite workspace here and keep it (default: a temporary folder)",
    )
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON output (default %(default)s)")
    args = parser.parse_args()
    counts = (args.pairs, args.operations, args.sqlite_annotators, args.pg_annotators)
    if min(counts) < 1 or min(args.judgments, args.warmup) < 0:
        parser.error("counts must be positive (--judgments and --warmup may be 0)")
    if min(args.sqlite_concurrent_operations, args.pg_operations) < 1:
        parser.error("operations per annotator must be at least 1")
    if args.judgments > 0.9 * args.pairs * OVERLAP:
        parser.error(f"--judgments must leave work: at most {int(0.9 * args.pairs * OVERLAP)}")
    return args


# ---- the synthetic database (not timed) ------------------------------------------------


@dataclass(frozen=True)
class Shape:
    pairs: int
    judgments: int
    bench_annotators: int

    @property
    def prompts(self) -> int:
        return -(-self.pairs // PAIRS_PER_PROMPT)

    @property
    def users(self) -> int:
        return HISTORICAL + self.bench_annotators


def texts(rng: np.random.Generator, count: int, words: tuple[int, int]) -> list[str]:
    picked = WORDS[rng.integers(0, len(WORDS), size=(count, words[1]))].tolist()
    lengths = rng.integers(words[0], words[1] + 1, size=count).tolist()
    return [" ".join(row[:length]) for row, length in zip(picked, lengths, strict=True)]


def fixed_rows(shape: Shape) -> dict[str, list[dict[str, Any]]]:
    users = [
        {
            "id": number,
            "name": f"annotator{number:03d}" if number <= HISTORICAL else f"bench{number:03d}",
            "role": "annotator",
            "password_hash": "not-a-hash",
            "active": True,
            "failed_logins": 0,
            "created_at": CREATED,
        }
        for number in range(1, shape.users + 1)
    ]
    model = {
        "id": 1,
        "kind": "policy",
        "name": "bench-policy",
        "path": "/bench/policy",
        "config": {},
        "metrics": {},
        "created_at": CREATED,
    }
    round_ = {
        "id": 1,
        "number": 1,
        "status": "open",
        "policy_id": 1,
        "overlap": OVERLAP,
        "gold_rate": GOLD_RATE,
        "guidelines": GUIDELINES,
        "created_at": CREATED,
    }
    return {"users": users, "models": [model], "rounds": [round_]}


def prompt_rows(rng: np.random.Generator, shape: Shape) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, shape.prompts, CHUNK):
        bodies = texts(rng, min(CHUNK, shape.prompts - start), PROMPT_WORDS)
        rows = []
        for offset, body in enumerate(bodies):
            prompt = f"Question {start + offset + 1}: {body}?"
            rows.append(
                {
                    "id": start + offset + 1,
                    "text": prompt,
                    "source": "bench",
                    "content_hash": hashlib.sha256(prompt.encode()).hexdigest(),
                    "split": "train",
                    "chat": False,
                    "created_at": CREATED,
                }
            )
        yield rows


def sample_rows(rng: np.random.Generator, shape: Shape) -> Iterator[list[dict[str, Any]]]:
    """Samples 2i+1 and 2i+2 are the two answers of pair i+1."""
    total = 2 * shape.pairs
    for start in range(0, total, CHUNK):
        bodies = texts(rng, min(CHUNK, total - start), TEXT_WORDS)
        yield [
            {
                "id": start + offset + 1,
                "prompt_id": (start + offset) // 2 // PAIRS_PER_PROMPT + 1,
                "policy_id": 1,
                "round_id": 1,
                "text": body,
                "decoding": {"temperature": 0.9, "top_p": 1.0, "max_new_tokens": 96},
                "seed": start + offset,
                "token_count": len(body) // 4,
                "finished": True,
                "created_at": CREATED,
            }
            for offset, body in enumerate(bodies)
        ]


def judgments_per_pair(rng: np.random.Generator, shape: Shape, gold: np.ndarray) -> np.ndarray:
    """Earlier judgments of each pair, skips included, summing to `shape.judgments`:
    gold pairs 40 to 60; ordinary pairs all 12 (the overlap) or else 0 to 11, the mix
    chosen for the total, then nudged one at a time to hit it exactly."""
    counts = rng.integers(0, OVERLAP, size=shape.pairs)
    counts[gold] = rng.integers(GOLD_JUDGMENTS[0], GOLD_JUDGMENTS[1] + 1, size=int(gold.sum()))
    counts = np.minimum(counts, HISTORICAL)
    ordinary = np.flatnonzero(~gold)
    wanted_mean = (shape.judgments - counts[gold].sum()) / max(1, len(ordinary))
    full_p = np.clip((wanted_mean - (OVERLAP - 1) / 2) / (OVERLAP - (OVERLAP - 1) / 2), 0, 1)
    counts[ordinary[rng.random(len(ordinary)) < full_p]] = OVERLAP
    while (missing := shape.judgments - int(counts.sum())) != 0:
        room = counts[ordinary] < OVERLAP if missing > 0 else counts[ordinary] > 0
        candidates = ordinary[room]
        if len(candidates) == 0:
            raise UserError(f"{shape.judgments} judgments do not fit {shape.pairs} pairs.")
        picked = rng.choice(candidates, size=min(abs(missing), len(candidates)), replace=False)
        counts[picked] += 1 if missing > 0 else -1
    return counts


@dataclass(frozen=True)
class Votes:
    """The earlier judgments as columns, one entry per judgment, ordered by pair."""

    pair: np.ndarray  # 0-based pair position
    annotator: np.ndarray
    choice: np.ndarray
    strength: np.ndarray
    left: np.ndarray
    spent: np.ndarray


def draw_votes(rng: np.random.Generator, per_pair: np.ndarray) -> Votes:
    """`per_pair[i]` judgments of pair i, from distinct earlier annotators."""
    annotators = []
    for start in range(0, len(per_pair), 10_000):
        count = per_pair[start : start + 10_000]
        order = rng.random((len(count), HISTORICAL)).argsort(axis=1)
        annotators.append(order[np.arange(HISTORICAL) < count[:, None]] + 1)
    total = int(per_pair.sum())
    weights = np.array(list(CHOICE_WEIGHTS.values()))
    return Votes(
        pair=np.repeat(np.arange(len(per_pair)), per_pair),
        annotator=np.concatenate(annotators),
        choice=rng.choice(len(weights), size=total, p=weights / weights.sum()),
        strength=rng.integers(1, 4, size=total),
        left=rng.integers(0, 2, size=total),
        spent=rng.integers(2_000, 60_000, size=total),
    )


def non_skip_counts(votes: Votes, pairs: int) -> np.ndarray:
    """Each pair's judgments other than skips: what `judgment_count` holds."""
    skip = list(CHOICE_WEIGHTS).index("skip")
    return np.bincount(votes.pair[votes.choice != skip], minlength=pairs)


def judgment_rows(votes: Votes) -> Iterator[list[dict[str, Any]]]:
    names = list(CHOICE_WEIGHTS)
    for start in range(0, len(votes.pair), CHUNK):
        part = slice(start, start + CHUNK)
        columns = zip(
            votes.pair[part].tolist(),
            votes.annotator[part].tolist(),
            votes.choice[part].tolist(),
            votes.strength[part].tolist(),
            votes.left[part].tolist(),
            votes.spent[part].tolist(),
            strict=True,
        )
        yield [
            {
                "id": start + n + 1,
                "pair_id": pair + 1,
                "annotator_id": annotator,
                "choice": names[choice],
                "strength": None if names[choice] == "skip" else strength,
                "rationale": "",
                "flags": {},
                "left_sample": "AB"[left],
                "ms_spent": spent,
                "created_at": CREATED + dt.timedelta(seconds=start + n),
            }
            for n, (pair, annotator, choice, strength, left, spent) in enumerate(columns)
        ]


def pair_rows(
    shape: Shape, gold: np.ndarray, gold_choice: np.ndarray, non_skip: np.ndarray
) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, shape.pairs, CHUNK):
        yield [
            {
                "id": pair + 1,
                "round_id": 1,
                "prompt_id": pair // PAIRS_PER_PROMPT + 1,
                "sample_a_id": 2 * pair + 1,
                "sample_b_id": 2 * pair + 2,
                "strategy": "random",
                "gold_choice": str(gold_choice[pair]) if gold[pair] else None,
                "judgment_count": int(non_skip[pair]),
                "created_at": CREATED,
            }
            for pair in range(start, min(start + CHUNK, shape.pairs))
        ]


def insert(connection: Connection, name: str, chunks: Iterator[list[dict[str, Any]]]) -> None:
    table: Table = Base.metadata.tables[name]
    for rows in chunks:
        connection.execute(table.insert(), rows)


def fill(engine: Engine, shape: Shape) -> None:
    """Every table in one transaction. Judgments are drawn before pairs are written, so
    each pair's `judgment_count` is known when it is inserted."""
    rng = np.random.default_rng(SEED)
    gold = rng.random(shape.pairs) < GOLD_SHARE
    gold_choice = rng.choice(
        ["A", "B", "tie", "both_bad"], size=shape.pairs, p=[0.45] * 2 + [0.05] * 2
    )
    votes = draw_votes(rng, judgments_per_pair(rng, shape, gold))
    non_skip = non_skip_counts(votes, shape.pairs)
    with engine.begin() as connection:
        for name, rows in fixed_rows(shape).items():
            insert(connection, name, iter([rows]))
        insert(connection, "prompts", prompt_rows(rng, shape))
        insert(connection, "samples", sample_rows(rng, shape))
        insert(connection, "pairs", pair_rows(shape, gold, gold_choice, non_skip))
        insert(connection, "judgments", judgment_rows(votes))
        if connection.dialect.name == "postgresql":
            for name in ("users", "models", "rounds", "prompts", "samples", "pairs", "judgments"):
                # Rows were inserted with explicit ids; move each id sequence past them.
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
                )
    settle(engine)


def settle(engine: Engine) -> None:
    """Bring the freshly loaded database to the state of one that has been in use a
    while: PostgreSQL vacuumed and analyzed (autovacuum does both after a large load),
    SQLite's write-ahead log copied back into the database (the load left it holding the
    whole database; a live one checkpoints every 1000 pages)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM ANALYZE"))
        else:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    gc.collect()  # the load's garbage, not the timed runs'


def build(url: str, root: Path, shape: Shape) -> tuple[Workspace, float]:
    """A workspace on `url` (empty: SQLite under `root`) holding the synthetic database,
    and the seconds its build took."""
    root.mkdir(parents=True, exist_ok=True)
    workspace = Workspace.open(root, {"database.url": url})
    if inspect(workspace.engine).get_table_names():
        raise UserError(
            f"The database {redact(workspace.db_url)} already has tables; point the benchmark "
            "at an empty database (or another --workspace): it inserts fixed ids."
        )
    print(
        f"Building {shape.judgments:,} judgments over {shape.pairs:,} pairs in "
        f"{redact(workspace.db_url)} (not timed)...",
        flush=True,
    )
    started = time.perf_counter()
    init_workspace(workspace)
    fill(workspace.engine, shape)
    seconds = time.perf_counter() - started
    print(f"  built in {seconds:.1f} s", flush=True)
    return workspace, seconds


# ---- the annotators --------------------------------------------------------------------


@dataclass
class Tally:
    """What one annotator did: timings of counted operations in ms, and every judgment
    whose transaction committed, warm-up included."""

    annotator_id: int
    record_ms: list[float] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    recorded: dict[int, str] = field(default_factory=dict)  # pair id -> choice
    submitted: int = 0
    refused: int = 0
    reshown: int = 0  # next_pair gave back a pair this annotator had judged
    errors: list[str] = field(default_factory=list)
    ran_out: bool = False
    timed_out: bool = False

    @property
    def operation_ms(self) -> list[float]:
        return [a + b for a, b in zip(self.record_ms, self.next_ms, strict=True)]


def choose(rng: random.Random) -> dict[str, Any]:
    """The form an annotator submits."""
    choice = rng.choices(list(CHOICE_WEIGHTS), weights=list(CHOICE_WEIGHTS.values()))[0]
    return {
        "choice": choice,
        "left_sample": rng.choice("AB"),
        "strength": None if choice == "skip" else rng.randint(1, 3),
        "ms_spent": rng.randint(2_000, 60_000),
    }


def fetch(factory: sessionmaker[Session], tally: Tally, rng: random.Random) -> Assignment | None:
    with transaction(factory) as session:
        return next_pair(session, tally.annotator_id, rng=rng)


def submit(factory: sessionmaker[Session], tally: Tally, pair_id: int, rng: random.Random) -> None:
    form = choose(rng)
    try:
        with transaction(factory) as session:
            record_judgment(session, tally.annotator_id, pair_id, **form)
    except PairUnavailable:
        tally.refused += 1
    else:
        tally.recorded[pair_id] = form["choice"]


def annotate(
    factory: sessionmaker[Session],
    tally: Tally,
    operations: int,
    warmup: int,
    start: threading.Barrier | None = None,
    deadline: float = float("inf"),
) -> None:
    """Open the page (one next_pair), then submit and fetch `warmup + operations` times,
    timing the last `operations`. Stops early when no pair is left, or at `deadline`
    (a `time.perf_counter()` value)."""
    rng = random.Random(f"{SEED}-{tally.annotator_id}")
    if start is not None:
        start.wait()
    current = fetch(factory, tally, rng)
    for number in range(warmup + operations):
        if current is None:
            tally.ran_out = True
            return
        if time.perf_counter() > deadline:
            tally.timed_out = True
            return
        tally.reshown += current.pair_id in tally.recorded
        tally.submitted += 1
        started = time.perf_counter()
        try:
            submit(factory, tally, current.pair_id, rng)
            recorded = time.perf_counter()
            current = fetch(factory, tally, rng)
        except Exception as exc:  # anything but PairUnavailable is a finding, not a crash
            tally.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            current = fetch(factory, tally, rng)
            continue
        done = time.perf_counter()
        if number >= warmup:
            tally.record_ms.append((recorded - started) * 1000)
            tally.next_ms.append((done - recorded) * 1000)


def guarded(
    factory: sessionmaker[Session],
    tally: Tally,
    operations: int,
    warmup: int,
    start: threading.Barrier,
    deadline: float,
) -> None:
    """`annotate`, with an exception outside a submit recorded rather than lost in a thread."""
    try:
        annotate(factory, tally, operations, warmup, start, deadline)
    except Exception as exc:
        tally.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])


@dataclass(frozen=True)
class Timing:
    """Wall seconds of a run, and the cores other processes kept busy meanwhile (the
    PostgreSQL server's among them, in a PostgreSQL run)."""

    seconds: float
    other_cores: float

    @classmethod
    def between(cls, before: CpuClock, after: CpuClock) -> Timing:
        seconds = after.wall - before.wall
        if not after.busy:
            return cls(seconds, 0.0)
        others = (after.busy - before.busy) - (after.own - before.own)
        return cls(seconds, max(0.0, others / seconds))


def run_alone(
    factory: sessionmaker[Session], annotator_id: int, operations: int, warmup: int
) -> tuple[list[Tally], Timing]:
    tally = Tally(annotator_id)
    before = cpu_clock()
    annotate(factory, tally, operations, warmup)
    return [tally], Timing.between(before, cpu_clock())


def run_together(
    factory: sessionmaker[Session],
    annotator_ids: list[int],
    operations: int,
    max_seconds: float,
) -> tuple[list[Tally], Timing]:
    """One thread per annotator, all starting at once, each with CONCURRENT_WARMUP
    untimed operations first."""
    tallies = [Tally(annotator_id) for annotator_id in annotator_ids]
    start = threading.Barrier(len(tallies) + 1)
    deadline = time.perf_counter() + max_seconds
    threads = [
        threading.Thread(
            target=guarded,
            args=(factory, tally, operations, CONCURRENT_WARMUP, start, deadline),
        )
        for tally in tallies
    ]
    for thread in threads:
        thread.start()
    start.wait()
    before = cpu_clock()
    for thread in threads:
        thread.join()
    return tallies, Timing.between(before, cpu_clock())


def time_progress(factory: sessionmaker[Session], annotator_id: int, calls: int) -> list[float]:
    """ms of `progress` (the page's progress bar), read-only, for information."""
    timings = []
    for _ in range(calls):
        with factory() as session:
            started = time.perf_counter()
            progress(session, annotator_id)
            timings.append((time.perf_counter() - started) * 1000)
    return timings


# ---- checks ----------------------------------------------------------------------------

_DUPLICATED = """SELECT count(*) FROM (SELECT pair_id, annotator_id FROM judgments
    GROUP BY pair_id, annotator_id HAVING count(*) > 1) AS twice"""
_ACTUAL = """SELECT pairs.id, pairs.gold_choice, pairs.judgment_count, rounds.overlap,
    coalesce(counted.n, 0) AS actual
    FROM pairs JOIN rounds ON rounds.id = pairs.round_id
    LEFT JOIN (SELECT pair_id, count(*) AS n FROM judgments WHERE choice <> 'skip'
               GROUP BY pair_id) AS counted ON counted.pair_id = pairs.id"""
_OVER = f"SELECT count(*) FROM ({_ACTUAL}) AS c WHERE gold_choice IS NULL AND actual > overlap"
_MISMATCH = f"SELECT count(*) FROM ({_ACTUAL}) AS c WHERE judgment_count <> actual"


def verify(engine: Engine, tallies: list[Tally]) -> dict[str, int]:
    """Lost, unexpected and duplicated judgments of these annotators; over-collected
    pairs and wrong `judgment_count`s in the whole database."""
    ids = ", ".join(str(tally.annotator_id) for tally in tallies)
    committed = {
        (tally.annotator_id, pair_id): choice
        for tally in tallies
        for pair_id, choice in tally.recorded.items()
    }
    with engine.connect() as connection:
        stored = {
            (annotator_id, pair_id): choice
            for annotator_id, pair_id, choice in connection.execute(
                text(
                    "SELECT annotator_id, pair_id, choice FROM judgments "
                    f"WHERE annotator_id IN ({ids})"
                )
            )
        }
        return {
            "lost": sum(stored.get(key) != choice for key, choice in committed.items()),
            "unexpected": sum(key not in committed for key in stored),
            "duplicated": int(connection.scalar(text(_DUPLICATED)) or 0),
            "over_overlap": int(connection.scalar(text(_OVER)) or 0),
            "count_mismatch": int(connection.scalar(text(_MISMATCH)) or 0),
        }


# ---- report ----------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run: its JSON prefix, its row label, and what it found."""

    prefix: str
    label: str
    tallies: list[Tally]
    timing: Timing
    checks: dict[str, int]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile in ms, rounded; None when there are no values."""
    return round(float(np.percentile(values, q)), 2) if values else None


def run_figures(run: Run) -> dict[str, object]:
    def pick(values: Callable[[Tally], list[float]]) -> list[float]:
        return [value for tally in run.tallies for value in values(tally)]

    operation = pick(lambda tally: tally.operation_ms)
    figures: dict[str, object] = {
        "annotators": len(run.tallies),
        "operations": len(operation),
        "seconds": round(run.timing.seconds, 2),
        "other_load_cores": round(run.timing.other_cores, 2),
    }
    for name, values in (
        ("", operation),
        ("record_", pick(lambda tally: tally.record_ms)),
        ("next_", pick(lambda tally: tally.next_ms)),
    ):
        for q in (50, 95, 99, 100):
            figures[f"{name}{'max' if q == 100 else f'p{q}'}_ms"] = percentile(values, q)
    errors = [error for tally in run.tallies for error in tally.errors]
    figures |= {
        "ops_per_s": round(sum(tally.submitted for tally in run.tallies) / run.timing.seconds, 1),
        "refused_full": sum(tally.refused for tally in run.tallies),
        "errors": len(errors),
        "ran_out": sum(tally.ran_out for tally in run.tallies),
        "stopped_at_max_seconds": sum(tally.timed_out for tally in run.tallies),
        **run.checks,
    }
    if errors:
        figures["first_error"] = errors[0]
    return {f"{run.prefix}_{name}": value for name, value in figures.items()}


CHECKS = ("errors", "reshown", "lost", "unexpected", "duplicated", "over_overlap", "count_mismatch")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        numbers = zip(row[1:], widths[1:], strict=True)
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_report(runs: list[Run], figures: dict[str, Any]) -> None:
    def get(run: Run, name: str) -> Any:
        return figures[f"{run.prefix}_{name}"]

    main_rows = [
        (
            run.label,
            str(get(run, "annotators")),
            f"{get(run, 'operations'):,}",
            *(ms(get(run, name)) for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
            f"{get(run, 'ops_per_s'):,.1f}",
            f"{get(run, 'other_load_cores'):.2f}",
            str(get(run, "refused_full")),
            *(str(get(run, name)) for name in CHECKS),
        )
        for run in runs
    ]
    header = ("backend", "annotators", "operations", "p50 ms", "p95 ms", "p99 ms", "max ms")
    header += (
        "ops/s",
        "other load",
        "refused",
        "errors",
        "reshown",
        "lost",
        "unexpected",
        "duplicated",
    )
    header += ("over-overlap", "count mismatch")
    print()
    print("record_judgment + next_pair, two transactions, per submit:")
    print(table(header, main_rows))
    split_rows = [
        (
            f"{run.label}: {function}",
            *(ms(get(run, f"{key}_{q}_ms")) for q in ("p50", "p95", "p99", "max")),
        )
        for run in runs
        for function, key in (("record_judgment", "record"), ("next_pair", "next"))
    ]
    print()
    print(table(("function", "p50 ms", "p95 ms", "p99 ms", "max ms"), split_rows))
    print()
    for run in runs:
        stopped = get(run, "stopped_at_max_seconds")
        if stopped:
            print(
                f"{run.label}: {stopped} annotators stopped at --max-seconds, before their "
                "operations were done."
            )
    if figures["postgres"] == "skipped":
        print(
            "PostgreSQL: skipped (no RLHF_TEST_PG_URL or --pg-url; run it through "
            "scripts/with_postgres.sh)."
        )
    print(
        f"progress (page's progress bar, not in the operation): p50 "
        f"{ms(figures['sqlite_progress_p50_ms'])} ms, p95 "
        f"{ms(figures['sqlite_progress_p95_ms'])} ms on SQLite"
    )
    print(
        "ops/s: submits per second of wall time, back to back, no thinking time; other load: "
        "cores other processes kept busy\nduring the run (PostgreSQL's server among them); "
        "refused: PairUnavailable, others filled the pair (correct)."
    )
    if figures["sqlite_single_disturbed"]:
        print(
            f"note: other processes kept {figures['sqlite_single_other_load_cores']:.2f} cores "
            "busy during the SQLite single-user run; rerun on a quiet machine."
        )
    verdict = "PASS" if figures["meets_target"] else "FAIL"
    print(
        f"SQLite single user p95: {ms(figures['sqlite_single_p95_ms'])} ms "
        f"(target < {TARGET_P95_MS:.0f} ms): {verdict}"
    )
    checks = "PASS" if figures["all_checks_pass"] else "FAIL"
    print(f"no errors, lost, unexpected, duplicated or over-collected judgments: {checks}")


def checked(engine: Engine, tallies: list[Tally]) -> dict[str, int]:
    checks = verify(engine, tallies) | {"reshown": sum(tally.reshown for tally in tallies)}
    print(f"  checks: {checks}", flush=True)
    return checks


def sqlite_runs(root: Path, shape: Shape, args: argparse.Namespace) -> tuple[list[Run], dict]:
    workspace, build_seconds = build("", root, shape)
    baseline = verify(workspace.engine, [])
    if baseline["count_mismatch"] or baseline["over_overlap"]:
        raise RuntimeError(f"the synthetic database is inconsistent: {baseline}")
    factory = workspace.sessions
    print(f"SQLite, one annotator: {args.warmup} + {args.operations} operations...", flush=True)
    single, timing = run_alone(factory, HISTORICAL + 1, args.operations, args.warmup)
    label = "sqlite, one annotator"
    runs = [Run("sqlite_single", label, single, timing, checked(workspace.engine, single))]
    progress_ms = time_progress(factory, HISTORICAL + 1, 50)
    count = args.sqlite_annotators
    ids = list(range(HISTORICAL + 2, HISTORICAL + 2 + count))
    print(f"SQLite, {count} annotators at once...", flush=True)
    operations = args.sqlite_concurrent_operations
    tallies, timing = run_together(factory, ids, operations, args.max_seconds)
    checks = checked(workspace.engine, [*single, *tallies])
    runs.append(Run(f"sqlite{count}", f"sqlite, {count} at once", tallies, timing, checks))
    workspace.engine.dispose()
    extra = {
        "sqlite_build_seconds": round(build_seconds, 1),
        "sqlite_progress_p50_ms": percentile(progress_ms, 50),
        "sqlite_progress_p95_ms": percentile(progress_ms, 95),
    }
    return runs, extra


def postgres_runs(url: str, shape: Shape, args: argparse.Namespace) -> tuple[list[Run], dict]:
    count = args.pg_annotators
    with tempfile.TemporaryDirectory(prefix="bench-annotate-pg-") as folder:
        workspace, build_seconds = build(url, Path(folder), shape)
        workspace.engine.dispose()
    engine = create_engine(
        url,
        pool_size=count,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )
    factory = session_factory(engine)
    try:
        with engine.connect() as connection:
            server = str(connection.scalar(text("SHOW server_version"))).split()[0]
        print(
            f"PostgreSQL {server}, one annotator: {args.warmup} + {args.pg_operations} "
            "operations...",
            flush=True,
        )
        single, timing = run_alone(factory, HISTORICAL + 1, args.pg_operations, args.warmup)
        label = "postgresql, one annotator"
        runs = [Run("pg_single", label, single, timing, checked(engine, single))]
        ids = list(range(HISTORICAL + 2, HISTORICAL + 2 + count))
        print(f"PostgreSQL, {count} annotators at once...", flush=True)
        tallies, timing = run_together(factory, ids, args.pg_operations, args.max_seconds)
        checks = checked(engine, [*single, *tallies])
    finally:
        engine.dispose()
    runs.append(Run(f"pg{count}", f"postgresql, {count} at once", tallies, timing, checks))
    return runs, {"postgres": server, "pg_build_seconds": round(build_seconds, 1)}


def benchmark(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    bench_annotators = 1 + max(args.sqlite_annotators, args.pg_annotators)
    shape = Shape(args.pairs, args.judgments, bench_annotators)
    runs, extra = sqlite_runs(root, shape, args)
    pg_url = os.environ.get("RLHF_TEST_PG_URL") or args.pg_url
    if pg_url:
        pg, pg_extra = postgres_runs(pg_url, shape, args)
        runs += pg
        extra |= pg_extra
    else:
        print("PostgreSQL: skipped, no RLHF_TEST_PG_URL or --pg-url.", flush=True)
        extra["postgres"] = "skipped"
    figures: dict[str, Any] = {
        "pairs": shape.pairs,
        "judgments": shape.judgments,
        "overlap": OVERLAP,
        "gold_rate": GOLD_RATE,
        "historical_annotators": HISTORICAL,
        **extra,
    }
    for run in runs:
        figures |= run_figures(run)
    p95 = figures["sqlite_single_p95_ms"]
    figures |= {
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": p95 is not None and p95 < TARGET_P95_MS,
        "sqlite_single_disturbed": figures["sqlite_single_other_load_cores"] > DISTURBED_CORES,
        "all_checks_pass": all(run.checks.get(name, 0) == 0 for run in runs for name in CHECKS)
        and not any(tally.errors for run in runs for tally in run.tallies),
        "machine": machine(("sqlalchemy", "psycopg", "numpy"), sqlite=sqlite3.sqlite_version),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print_report(runs, figures)
    return figures


main = benchmark_main(parse_args, "bench-annotate-", benchmark)


if __name__ == "__main__":
    raise SystemExit(main())
