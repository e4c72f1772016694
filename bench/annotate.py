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
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from annotate_clients import (
    CHOICE_WEIGHTS,
    SEED,
    Tally,
    Timing,
    run_alone,
    run_closed_loop,
    run_open_loop,
    run_threads,
    time_progress,
)
from common import benchmark_main, cpu_clock, machine
from sqlalchemy import Connection, Engine, Table, create_engine, inspect, text

from db import round_progress
from db.engine import redact, session_factory
from db.judgments import LOCKINGS, set_locking
from db.models import Base
from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "annotate.json"
TARGET_P95_MS = 20.0
TARGET_CLOSED_OPS_PER_S = 400.0  # PostgreSQL, row locks, closed loop
TARGET_OPEN_P95_MS, TARGET_OPEN_P99_MS = 50.0, 100.0  # PostgreSQL, row locks, open loop
TARGET_PROGRESS_MS = 2.0
OVERLAP = 12
GOLD_RATE = 0.05  # the round's share of gold pairs shown
GOLD_SHARE = 0.01  # the share of the round's pairs that are gold
HISTORICAL = 100  # annotators who made the existing judgments: user ids 1..100
GOLD_JUDGMENTS = (40, 60)  # earlier judgments per gold pair
PAIRS_PER_PROMPT = 3
CHUNK = 50_000  # rows per bulk insert
CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
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
    add("--pg-annotators", type=int, default=128, help="PostgreSQL closed loop's annotators")
    add("--pg-operations", type=int, default=40, help="operations each (default 40)")
    add("--client-processes", type=int, default=4, help="processes of the closed loop")
    add(
        "--closed-repeats",
        type=int,
        default=3,
        help="closed loops per locking, on fresh annotators; the median decides (default 3)",
    )
    add("--open-rate", type=float, default=100.0, help="open loop: operations/s (default 100)")
    add("--open-seconds", type=float, default=30.0, help="open loop: seconds (default 30)")
    add("--open-annotators", type=int, default=1000, help="open loop: annotators")
    add("--open-workers", type=int, default=32, help="open loop: threads and connections")
    add("--lockings", default=",".join(LOCKINGS), help="PostgreSQL strategies to run")
    add("--progress-draws", type=int, default=200, help="timed progress bar draws")
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
    counts += (args.client_processes, args.open_annotators, args.open_workers, args.closed_repeats)
    args.lockings = [name.strip() for name in args.lockings.split(",") if name.strip()]
    if not set(args.lockings) <= set(LOCKINGS) or not args.lockings:
        parser.error(f"--lockings takes a comma-separated list of {', '.join(LOCKINGS)}")
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
        ("arrival_", pick(lambda tally: tally.arrival_ms)),
    ):
        if name == "arrival_" and not values:
            continue
        for q in (50, 95, 99, 100):
            figures[f"{name}{'max' if q == 100 else f'p{q}'}_ms"] = percentile(values, q)
    figures["mean_ms"] = round(float(np.mean(operation)), 2) if operation else None
    errors = [error for tally in run.tallies for error in tally.errors]
    figures |= {
        "ops_per_s": round(len(operation) / run.timing.seconds, 1),
        "refused_full": sum(tally.refused for tally in run.tallies),
        "double_submits": sum(tally.double_submits for tally in run.tallies),
        "undos": sum(tally.undos for tally in run.tallies),
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
        return figures.get(f"{run.prefix}_{name}")

    main_rows = [
        (
            run.label,
            str(get(run, "annotators")),
            f"{get(run, 'operations'):,}",
            *(ms(get(run, name)) for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
            ms(get(run, "arrival_p95_ms")),
            ms(get(run, "arrival_p99_ms")),
            f"{get(run, 'ops_per_s'):,.1f}",
            f"{get(run, 'other_load_cores'):.2f}",
            str(get(run, "refused_full")),
            f"{get(run, 'double_submits')}/{get(run, 'undos')}",
            *(str(get(run, name)) for name in CHECKS),
        )
        for run in runs
    ]
    header = ("run", "annotators", "operations", "p50 ms", "p95 ms", "p99 ms", "max ms")
    header += ("arrival p95", "arrival p99", "ops/s", "other load", "refused", "double/undo")
    header += ("errors", "reshown", "lost", "unexpected", "duplicated", "over", "mismatch")
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
            print(f"{run.label}: {stopped} annotators stopped at --max-seconds.")
    if figures["postgres"] == "skipped":
        print(
            "PostgreSQL: skipped (no RLHF_TEST_PG_URL or --pg-url; run it through "
            "scripts/with_postgres.sh)."
        )
    for backend in ("sqlite", "pg"):
        if f"{backend}_progress_p95_ms" in figures:
            print(
                f"progress bar ({backend}): p50 {ms(figures[f'{backend}_progress_p50_ms'])} ms, "
                f"p95 {ms(figures[f'{backend}_progress_p95_ms'])} ms, mean "
                f"{ms(figures[f'{backend}_progress_mean_ms'])} ms per draw (uncached: p50 "
                f"{ms(figures[f'{backend}_progress_uncached_p50_ms'])} ms)"
            )
    for locking in ("rows", "global"):
        if f"pg_closed_{locking}_ops_per_s_runs" in figures:
            print(
                f"closed loop ({locking}): ops/s {figures[f'pg_closed_{locking}_ops_per_s_runs']}, "
                f"median {figures[f'pg_closed_{locking}_ops_per_s']}"
            )
    for name in ("closed_ops_ratio", "open_p95_ratio", "open_p99_ratio"):
        if name in figures:
            print(f"{name} (rows over global, higher is better for rows): {figures[name]}")
    print(
        "ops/s: submits per second of wall time; arrival: ms from the operation's arrival "
        "(open loop, queueing included); other load:\ncores other processes kept busy "
        "(PostgreSQL's server and the client processes among them); refused: PairUnavailable "
        "(correct)."
    )
    if figures["sqlite_single_disturbed"]:
        print(
            f"note: other processes kept {figures['sqlite_single_other_load_cores']:.2f} cores "
            "busy during the SQLite single-user run; rerun on a quiet machine."
        )
    for name, verdict in figures["targets"].items():
        print(f"target {name}: {'PASS' if verdict else 'FAIL'}")
    checks = "PASS" if figures["all_checks_pass"] else "FAIL"
    print(f"no errors, lost, unexpected, duplicated or over-collected judgments: {checks}")


def checked(engine: Engine, tallies: list[Tally]) -> dict[str, int]:
    checks = verify(engine, tallies) | {"reshown": sum(tally.reshown for tally in tallies)}
    print(f"  checks: {checks}", flush=True)
    return checks


def progress_figures(factory: Any, backend: str, annotator_id: int, draws: int) -> dict:
    """The progress bar's cost per draw: with its cache (what the page pays), and without
    (the exact sum over the round, for comparison)."""
    uncached = []
    for _ in range(20):
        round_progress.clear()
        uncached += time_progress(factory, annotator_id, 1)
    cached = time_progress(factory, annotator_id, draws)
    return {
        f"{backend}_progress_p50_ms": percentile(cached, 50),
        f"{backend}_progress_p95_ms": percentile(cached, 95),
        f"{backend}_progress_mean_ms": round(float(np.mean(cached)), 3),
        f"{backend}_progress_uncached_p50_ms": percentile(uncached, 50),
    }


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
    extra = progress_figures(factory, "sqlite", HISTORICAL + 1, args.progress_draws)
    count = args.sqlite_annotators
    ids = list(range(HISTORICAL + 2, HISTORICAL + 2 + count))
    print(f"SQLite, {count} annotators at once...", flush=True)
    before = cpu_clock()
    tallies = run_threads(factory, ids, args.sqlite_concurrent_operations, args.max_seconds)
    timing = Timing.between(before, cpu_clock())
    checks = checked(workspace.engine, [*single, *tallies])
    runs.append(Run(f"sqlite{count}", f"sqlite, {count} at once", tallies, timing, checks))
    workspace.engine.dispose()
    return runs, extra | {"sqlite_build_seconds": round(build_seconds, 1)}


def postgres_runs(url: str, shape: Shape, args: argparse.Namespace) -> tuple[list[Run], dict]:
    """One annotator; then per strategy the closed loop (client processes) and the open
    loop (Poisson arrivals), each on fresh annotators, the database checked after each."""
    with tempfile.TemporaryDirectory(prefix="bench-annotate-pg-") as folder:
        workspace, build_seconds = build(url, Path(folder), shape)
        workspace.engine.dispose()
    pool = max(args.open_workers, 4)
    engine = create_engine(
        url, pool_size=pool, max_overflow=0, pool_pre_ping=True, connect_args={"connect_timeout": 5}
    )
    factory = session_factory(engine)
    everyone: list[Tally] = []
    runs: list[Run] = []
    next_id = HISTORICAL + 1

    def fresh(count: int) -> list[int]:
        nonlocal next_id
        next_id += count
        return list(range(next_id - count, next_id))

    def record(prefix: str, label: str, tallies: list[Tally], timing: Timing) -> None:
        everyone.extend(tallies)
        runs.append(Run(prefix, label, tallies, timing, checked(engine, everyone)))

    try:
        with engine.connect() as connection:
            server = str(connection.scalar(text("SHOW server_version"))).split()[0]
        set_locking("rows")
        print(f"PostgreSQL {server}, one annotator...", flush=True)
        (single_id,) = fresh(1)
        single, timing = run_alone(factory, single_id, args.pg_operations, args.warmup)
        record("pg_single", "postgresql, one annotator (rows)", single, timing)
        extra = progress_figures(factory, "pg", single_id, args.progress_draws)
        count = args.pg_annotators
        # Interleaved, so that a machine that slows down mid-run slows both lockings.
        for repeat in range(1, args.closed_repeats + 1):
            for locking in args.lockings:
                print(
                    f"PostgreSQL, {locking}: closed loop {repeat}, {count} annotators...",
                    flush=True,
                )
                tallies, timing = run_closed_loop(
                    url,
                    locking,
                    fresh(count),
                    args.pg_operations,
                    args.max_seconds,
                    args.client_processes,
                )
                prefix, label = f"pg_closed_{locking}_{repeat}", f"pg closed {count} ({locking})"
                record(prefix, f"{label} #{repeat}", tallies, timing)
        for locking in args.lockings:
            set_locking(locking)
            print(
                f"PostgreSQL, {locking}: open loop, {args.open_rate:g}/s for "
                f"{args.open_seconds:g} s...",
                flush=True,
            )
            ids = fresh(args.open_annotators)
            tallies, timing = run_open_loop(
                factory, ids, args.open_rate, args.open_seconds, args.open_workers
            )
            record(
                f"pg_open_{locking}", f"pg open {args.open_rate:g}/s ({locking})", tallies, timing
            )
        set_locking("rows")
    finally:
        engine.dispose()
    return runs, extra | {"postgres": server, "pg_build_seconds": round(build_seconds, 1)}


def closed_medians(figures: dict[str, Any], lockings: list[str], repeats: int) -> dict[str, Any]:
    """Per locking, the closed loop's ops/s of every repeat and their median, which the
    target and the ratio use: under 128 annotators on 2 cores one repeat can fall into a
    slow phase (claims retried on stale lease counts) that the next does not. Nothing
    when the PostgreSQL runs were skipped."""
    out: dict[str, Any] = {}
    for locking in lockings:
        runs = [
            figures.get(f"pg_closed_{locking}_{repeat}_ops_per_s")
            for repeat in range(1, repeats + 1)
        ]
        if all(value is not None for value in runs):
            out[f"pg_closed_{locking}_ops_per_s_runs"] = runs
            out[f"pg_closed_{locking}_ops_per_s"] = round(float(np.median(runs)), 1)
    return out


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """Row locks against the global lock, from the same run (a busy machine slows both)."""
    out = {}
    rows, glob = figures.get("pg_closed_rows_ops_per_s"), figures.get("pg_closed_global_ops_per_s")
    if rows and glob:
        out["closed_ops_ratio"] = round(rows / glob, 2)
    for q in ("p95", "p99"):
        rows, glob = (
            figures.get(f"pg_open_rows_arrival_{q}_ms"),
            figures.get(f"pg_open_global_arrival_{q}_ms"),
        )
        if rows and glob:
            out[f"open_{q}_ratio"] = round(glob / rows, 2)
    return out


def targets(figures: dict[str, Any]) -> dict[str, bool]:
    def at_most(name: str, bound: float) -> bool:
        value = figures.get(name)
        return value is not None and value <= bound

    found = {
        f"sqlite single p95 < {TARGET_P95_MS:g} ms": at_most("sqlite_single_p95_ms", TARGET_P95_MS),
        f"progress p95 < {TARGET_PROGRESS_MS:g} ms (sqlite)": at_most(
            "sqlite_progress_p95_ms", TARGET_PROGRESS_MS
        ),
    }
    if figures["postgres"] != "skipped":
        closed = figures.get("pg_closed_rows_ops_per_s") or 0
        found |= {
            f"pg closed loop >= {TARGET_CLOSED_OPS_PER_S:g} ops/s": closed
            >= TARGET_CLOSED_OPS_PER_S,
            f"pg open loop p95 <= {TARGET_OPEN_P95_MS:g} ms": at_most(
                "pg_open_rows_arrival_p95_ms", TARGET_OPEN_P95_MS
            ),
            f"pg open loop p99 <= {TARGET_OPEN_P99_MS:g} ms": at_most(
                "pg_open_rows_arrival_p99_ms", TARGET_OPEN_P99_MS
            ),
            f"progress p95 < {TARGET_PROGRESS_MS:g} ms (pg)": at_most(
                "pg_progress_p95_ms", TARGET_PROGRESS_MS
            ),
        }
    return found


def benchmark(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    per_locking = args.pg_annotators * args.closed_repeats + args.open_annotators
    bench_annotators = max(1 + args.sqlite_annotators, 1 + len(args.lockings) * per_locking)
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
        "client_processes": args.client_processes,
        "open_rate": args.open_rate,
        "open_workers": args.open_workers,
        **extra,
    }
    for run in runs:
        figures |= run_figures(run)
    figures |= closed_medians(figures, args.lockings, args.closed_repeats)
    figures |= ratios(figures)
    figures |= {
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": (figures["sqlite_single_p95_ms"] or 1e9) < TARGET_P95_MS,
        "sqlite_single_disturbed": figures["sqlite_single_other_load_cores"] > DISTURBED_CORES,
        "all_checks_pass": all(run.checks.get(name, 0) == 0 for run in runs for name in CHECKS)
        and not any(tally.errors for run in runs for tally in run.tallies),
        "machine": machine(("sqlalchemy", "psycopg", "numpy"), sqlite=sqlite3.sqlite_version),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    figures["targets"] = targets(figures)
    print_report(runs, figures)
    return figures


main = benchmark_main(parse_args, "bench-annotate-", benchmark)


if __name__ == "__main__":
    raise SystemExit(main())
