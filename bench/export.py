"""Benchmark `rlhf export` on a million judgments, against a naive row-by-row ORM loop.

Measures, in one run and on the same machine:

- full: `export_preferences` (what `rlhf export` runs) writing the HF format from a
  synthetic database of 1,000,000 judgments over 300,000 pairs: seconds, rows, and the
  peak memory of the process (targets: under 30 s and under 2 GiB); and
- subset: the same call and a naive exporter a reasonable engineer might write first
  (ORM objects row by row: each judgment, its pair, the pair's samples and prompt
  through relationships, votes tallied in dicts, then `Dataset.from_dict(...)
  .save_to_disk`) on a second database of 50,000 judgments over 15,000 pairs built by
  the same generator; their ratio is the speedup. The naive figure scaled to the full
  size is an extrapolation, not a measurement.

Each timed export runs in its own freshly spawned process, so its peak memory is its own
and not the database build's; the process's memory after its imports is reported as the
baseline. Peak memory is the process's VmHWM from /proc, not ru_maxrss: Linux carries
ru_maxrss over from the parent through fork and exec, so a spawned child would report
the parent's peak (the database build's) whenever that is the larger.

The naive exporter does less than ours (no agreement statistics, margins, split, manifest
or card), which only flatters it.

Setup is not timed, only reported: a fresh workspace per database in a temporary folder
(or under `--workspace`), filled with SQLAlchemy Core bulk inserts from a seeded RNG, so
the databases are the same on every run. `--keep-db` reuses databases that an earlier
run with the same `--workspace`, `--pairs` and `--judgments` left behind.

Run it from the repository root:

    python bench/export.py            # prints a table, writes bench/results/export.json
    python bench/export.py --workspace /tmp/bench-export --keep-db   # quick reruns
    python bench/export.py --pairs 30000 --judgments 100000 --subset-judgments 10000
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import hashlib
import multiprocessing
import resource
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from common import benchmark_main, machine
from sqlalchemy import Connection, Table, func, select

from db.models import Base, Judgment, Pair, Round
from rlhf_train.errors import UserError
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.judgments.agreement import CATEGORIES
from rlhf_train.workspace import DATABASE_FILE, Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "export.json"
TARGET_SECONDS = 30.0
TARGET_PEAK_MIB = 2048.0
SEED = 0
ANNOTATORS = 10
ROUNDS = 2
PAIRS_PER_PROMPT = 3
CHUNK = 50_000  # rows per bulk insert
GOLD_RATE = 0.01
CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
# Each pair has a true outcome; each vote is a skip, agrees with it, or is random.
TRUE_OUTCOME_P = (0.44, 0.44, 0.06, 0.06)  # over CATEGORIES: A, B, tie, both_bad
RANDOM_VOTE_P = (0.4, 0.4, 0.12, 0.08)
SKIP_P = 0.05
AGREE_P = 0.7
NO_STRENGTH_P = 0.25
_WORD_TEXT = """the a model answer question because however which could would should data result
    first second then finally example clearly simple good better best poor wrong right
    reason step value number text story movie review plot actor scene ending character
    short long summary explain describe compare list write code function return error
    test user prompt response helpful honest harmless safe detail context point idea
    we you they it is are was were be have has do does not and or but if when while
    about into over under between through during before after again further once here
    there all any both each few more most other some such only own same so than too very
    can will just now also well even back still way take make see know think say"""
WORDS = np.array(_WORD_TEXT.split())
TEXT_WORDS = (35, 65)  # a response: about 200 to 400 characters
PROMPT_WORDS = (15, 30)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="seconds and peak memory of `rlhf export` against a naive ORM loop"
    )
    parser.add_argument(
        "--pairs", type=int, default=300_000, help="pairs in the full database (default 300000)"
    )
    parser.add_argument(
        "--judgments",
        type=int,
        default=1_000_000,
        help="judgments in the full database (default 1000000)",
    )
    parser.add_argument(
        "--subset-judgments",
        type=int,
        default=50_000,
        help="judgments in the subset database both exporters run on (default 50000)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="folder to build the two workspaces in (full/ and subset/) and keep "
        "(default: a temporary folder)",
    )
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="reuse the databases an earlier run left under --workspace",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default %(default)s)"
    )
    args = parser.parse_args()
    if min(args.pairs, args.judgments, args.subset_judgments) < 1:
        parser.error("--pairs, --judgments and --subset-judgments must be at least 1")
    if not args.pairs <= args.judgments <= args.pairs * ANNOTATORS:
        parser.error(f"--judgments must be between --pairs and {ANNOTATORS} x --pairs")
    if args.subset_judgments > args.judgments:
        parser.error("--subset-judgments must be at most --judgments")
    if args.keep_db and args.workspace is None:
        parser.error("--keep-db needs --workspace")
    return args


# ---- the synthetic database (not timed) ------------------------------------------------


@dataclass(frozen=True)
class Shape:
    pairs: int
    judgments: int

    @property
    def prompts(self) -> int:
        return -(-self.pairs // PAIRS_PER_PROMPT)


def open_workspace(root: Path) -> Workspace:
    # Never touch a database that RLHF_DB_URL points at.
    return Workspace.open(root, {"database.url": ""})


def texts(rng: np.random.Generator, count: int, words: tuple[int, int]) -> list[str]:
    picked = WORDS[rng.integers(0, len(WORDS), size=(count, words[1]))].tolist()
    lengths = rng.integers(words[0], words[1] + 1, size=count).tolist()
    return [" ".join(row[:length]) for row, length in zip(picked, lengths, strict=True)]


def fixed_rows() -> dict[str, list[dict[str, Any]]]:
    users = [
        {
            "id": number,
            "name": f"annotator{number:02d}",
            "role": "annotator",
            "password_hash": "not-a-hash",
            "active": True,
            "failed_logins": 0,
            "created_at": CREATED,
        }
        for number in range(1, ANNOTATORS + 1)
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
    rounds = [
        {
            "id": number,
            "number": number,
            "status": "closed",
            "policy_id": 1,
            "overlap": 3,
            "gold_rate": GOLD_RATE,
            "guidelines": "",
            "created_at": CREATED,
        }
        for number in range(1, ROUNDS + 1)
    ]
    return {"users": users, "models": [model], "rounds": rounds}


def prompt_rows(rng: np.random.Generator, shape: Shape) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, shape.prompts, CHUNK):
        count = min(CHUNK, shape.prompts - start)
        bodies = texts(rng, count, PROMPT_WORDS)
        rows = []
        for offset, body in enumerate(bodies):
            text = f"Question {start + offset + 1}: {body}?"
            rows.append(
                {
                    "id": start + offset + 1,
                    "text": text,
                    "source": "bench",
                    "content_hash": hashlib.sha256(text.encode()).hexdigest(),
                    "split": "train",
                    "chat": False,
                    "created_at": CREATED,
                }
            )
        yield rows


def round_of(pair: int, shape: Shape) -> int:
    """Round id of the pair at 0-based position `pair`: the pairs split evenly."""
    return 1 + pair * ROUNDS // shape.pairs


def sample_rows(rng: np.random.Generator, shape: Shape) -> Iterator[list[dict[str, Any]]]:
    """Samples 2i+1 and 2i+2 are the two answers of pair i+1."""
    total = 2 * shape.pairs
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        bodies = texts(rng, count, TEXT_WORDS)
        seeds = rng.integers(0, 2**31, size=count).tolist()
        finished = (rng.random(count) < 0.9).tolist()
        rows = []
        for offset, body in enumerate(bodies):
            pair = (start + offset) // 2
            rows.append(
                {
                    "id": start + offset + 1,
                    "prompt_id": pair // PAIRS_PER_PROMPT + 1,
                    "policy_id": 1,
                    "round_id": round_of(pair, shape),
                    "text": body,
                    "decoding": {"temperature": 0.9, "top_p": 1.0, "max_new_tokens": 96},
                    "seed": seeds[offset],
                    "token_count": len(body) // 4,
                    "finished": finished[offset],
                    "created_at": CREATED,
                }
            )
        yield rows


def pair_rows(shape: Shape, truth: np.ndarray, gold: np.ndarray) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, shape.pairs, CHUNK):
        yield [
            {
                "id": pair + 1,
                "round_id": round_of(pair, shape),
                "prompt_id": pair // PAIRS_PER_PROMPT + 1,
                "sample_a_id": 2 * pair + 1,
                "sample_b_id": 2 * pair + 2,
                "strategy": "random",
                "gold_choice": CATEGORIES[truth[pair]] if gold[pair] else None,
                "created_at": CREATED,
            }
            for pair in range(start, min(start + CHUNK, shape.pairs))
        ]


def votes(rng: np.random.Generator, truth: np.ndarray) -> list[str]:
    """One choice per vote, given the true outcome of each vote's pair."""
    random = rng.choice(len(CATEGORIES), size=len(truth), p=RANDOM_VOTE_P)
    codes = np.where(rng.random(len(truth)) < AGREE_P, truth, random)
    choices = np.array(CATEGORIES, dtype=object)[codes]
    choices[rng.random(len(truth)) < SKIP_P] = "skip"
    return choices.tolist()


def judgment_rows(
    rng: np.random.Generator, shape: Shape, truth: np.ndarray
) -> Iterator[list[dict[str, Any]]]:
    """`shape.judgments` votes: every pair gets the same number, give or take one, each
    from distinct annotators."""
    base, extra = divmod(shape.judgments, shape.pairs)
    per_pair = base + (rng.permutation(shape.pairs) < extra)
    step = max(1, CHUNK * shape.pairs // shape.judgments)
    next_id = 1
    for start in range(0, shape.pairs, step):
        count = per_pair[start : start + step]
        order = rng.random((len(count), ANNOTATORS)).argsort(axis=1)
        taken = np.arange(ANNOTATORS) < count[:, None]
        pairs = np.repeat(np.arange(start, start + len(count)), count)
        annotators = (order[taken] + 1).tolist()
        choices = votes(rng, truth[pairs])
        strengths = rng.integers(1, 4, size=len(pairs)).tolist()
        missing = (rng.random(len(pairs)) < NO_STRENGTH_P).tolist()
        left = rng.choice(["A", "B"], size=len(pairs)).tolist()
        spent = rng.integers(2_000, 60_000, size=len(pairs)).tolist()
        rows = [
            {
                "id": next_id + n,
                "pair_id": pair + 1,
                "annotator_id": annotators[n],
                "choice": choices[n],
                "strength": None if missing[n] or choices[n] == "skip" else strengths[n],
                "rationale": "",
                "flags": {},
                "left_sample": left[n],
                "ms_spent": spent[n],
                "created_at": CREATED,
            }
            for n, pair in enumerate(pairs.tolist())
        ]
        next_id += len(rows)
        yield rows


def insert(connection: Connection, name: str, chunks: Iterator[list[dict[str, Any]]]) -> None:
    table: Table = Base.metadata.tables[name]
    for rows in chunks:
        connection.execute(table.insert(), rows)


def fill(workspace: Workspace, shape: Shape) -> None:
    rng = np.random.default_rng(SEED)
    truth = rng.choice(len(CATEGORIES), size=shape.pairs, p=TRUE_OUTCOME_P)
    gold = rng.random(shape.pairs) < GOLD_RATE
    with workspace.engine.begin() as connection:
        for name, rows in fixed_rows().items():
            insert(connection, name, iter([rows]))
        insert(connection, "prompts", prompt_rows(rng, shape))
        insert(connection, "samples", sample_rows(rng, shape))
        insert(connection, "pairs", pair_rows(shape, truth, gold))
        insert(connection, "judgments", judgment_rows(rng, shape, truth))


def counts_in(workspace: Workspace) -> tuple[int, int]:
    with workspace.engine.connect() as connection:
        pairs = connection.scalar(select(func.count()).select_from(Pair))
        judgments = connection.scalar(select(func.count()).select_from(Judgment))
    return int(pairs or 0), int(judgments or 0)


def build(root: Path, shape: Shape, keep: bool) -> float:
    """A workspace at `root` holding the synthetic database; the seconds its build took
    (0 when an existing one was reused)."""
    if (root / DATABASE_FILE).exists():
        if keep and counts_in(open_workspace(root)) == (shape.pairs, shape.judgments):
            print(f"Reusing the database in {root}", flush=True)
            return 0.0
        raise UserError(
            f"{root / DATABASE_FILE} already exists"
            + (" with other counts" if keep else "")
            + "; delete it, or pass --keep-db with the --pairs and --judgments it was built "
            "with, or choose another --workspace."
        )
    print(
        f"Building {shape.judgments:,} judgments over {shape.pairs:,} pairs in {root} "
        "(not timed)...",
        flush=True,
    )
    started = time.perf_counter()
    workspace = open_workspace(root)
    init_workspace(workspace)
    fill(workspace, shape)
    workspace.engine.dispose()
    seconds = time.perf_counter() - started
    print(f"  built in {seconds:.1f} s", flush=True)
    return seconds


# ---- the timed exports, each in a fresh process -----------------------------------------


def memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def ours(workspace: Workspace, out: Path) -> int:
    result = export_preferences(workspace, ExportOptions(out=out, formats=("hf",)))
    return result.counts["rows_train"] + result.counts["rows_test"]


def naive(workspace: Workspace, out: Path) -> int:
    """The first exporter one might write: ORM objects, one row at a time."""
    tallies: dict[int, Counter[str]] = defaultdict(Counter)
    columns: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    with workspace.sessions() as session:
        round_ids = session.scalars(select(Round.id)).all()
        query = select(Judgment).join(Pair).where(Pair.round_id.in_(round_ids))
        for judgment in session.scalars(query.order_by(Judgment.id)):
            pair = session.get(Pair, judgment.pair_id)
            if judgment.choice != "skip":
                tallies[pair.id][judgment.choice] += 1
        for pair_id, tally in tallies.items():
            (winner, top), *others = tally.most_common()
            if winner not in ("A", "B") or (others and others[0][1] == top):
                continue  # a tie, both bad, or no strict majority
            pair = session.get(Pair, pair_id)
            chosen, rejected = pair.sample_a, pair.sample_b
            if winner == "B":
                chosen, rejected = rejected, chosen
            columns["prompt"].append(pair.prompt.text)
            columns["chosen"].append(chosen.text)
            columns["rejected"].append(rejected.text)
    datasets.Dataset.from_dict(columns).save_to_disk(str(out))
    return len(columns["prompt"])


EXPORTERS = {"ours": ours, "naive": naive}


def timed_export(variant: str, root: str, out: str) -> dict[str, float]:
    """Run in a spawned process: memory after imports, then one timed export."""
    datasets.disable_progress_bars()
    baseline = memory_mib("VmRSS")
    started = time.perf_counter()
    rows = EXPORTERS[variant](open_workspace(Path(root)), Path(out))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": rows,
        "baseline_mib": baseline,
        "peak_mib": memory_mib("VmHWM"),
    }


def in_child(variant: str, root: Path, out: Path) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(1)
    try:
        return pool.apply(timed_export, (variant, str(root), str(out)))
    finally:
        pool.close()
        pool.join()


# ---- report ----------------------------------------------------------------------------


def summarize(
    full: Shape, subset: Shape, builds: tuple[float, float], runs: dict[str, dict[str, float]]
) -> dict[str, object]:
    whole, mine, slow = runs["full"], runs["subset_ours"], runs["subset_naive"]
    figures: dict[str, object] = {
        "pairs": full.pairs,
        "judgments": full.judgments,
        "subset_pairs": subset.pairs,
        "subset_judgments": subset.judgments,
        "build_seconds": round(builds[0], 1),
        "subset_build_seconds": round(builds[1], 1),
        "full_seconds": round(whole["seconds"], 3),
        "full_rows": whole["rows"],
        "full_rows_per_s": round(whole["rows"] / whole["seconds"]),
        "full_judgments_per_s": round(full.judgments / whole["seconds"]),
        "full_baseline_rss_mib": round(whole["baseline_mib"], 1),
        "full_peak_rss_mib": round(whole["peak_mib"], 1),
        "full_added_rss_mib": round(whole["peak_mib"] - whole["baseline_mib"], 1),
    }
    for name, run in (("ours", mine), ("naive", slow)):
        figures |= {
            f"subset_{name}_seconds": round(run["seconds"], 3),
            f"subset_{name}_rows": run["rows"],
            f"subset_{name}_judgments_per_s": round(subset.judgments / run["seconds"]),
            f"subset_{name}_peak_rss_mib": round(run["peak_mib"], 1),
        }
    return figures | {
        "speedup_vs_naive": round(slow["seconds"] / mine["seconds"], 2),
        "naive_extrapolated_full_seconds": round(
            slow["seconds"] * full.judgments / subset.judgments, 1
        ),
        "target_seconds": TARGET_SECONDS,
        "target_peak_mib": TARGET_PEAK_MIB,
        "meets_time_target": whole["seconds"] < TARGET_SECONDS,
        "meets_memory_target": whole["peak_mib"] < TARGET_PEAK_MIB,
        "machine": machine(("torch", "datasets", "sqlalchemy", "numpy")),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def table(rows: list[tuple[str, ...]]) -> str:
    header = ("variant", "judgments", "pairs", "rows", "seconds", "judgments/s", "peak MiB")
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        numbers = zip(row[1:], widths[1:], strict=True)
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(full: Shape, subset: Shape, figures: dict[str, Any]) -> None:
    def row(name: str, shape: Shape, prefix: str, peak: str) -> tuple[str, ...]:
        seconds = figures[f"{prefix}_seconds"]
        return (
            name,
            f"{shape.judgments:,}",
            f"{shape.pairs:,}",
            f"{figures[f'{prefix}_rows']:,}",
            f"{seconds:.2f}",
            f"{shape.judgments / seconds:,.0f}",
            f"{figures[peak]:,.0f}",
        )

    extrapolated = figures["naive_extrapolated_full_seconds"]
    rows = [
        row("ours, full (export_preferences, hf)", full, "full", "full_peak_rss_mib"),
        row("ours, subset", subset, "subset_ours", "subset_ours_peak_rss_mib"),
        row("naive ORM loop, subset", subset, "subset_naive", "subset_naive_peak_rss_mib"),
        (
            "naive, extrapolated to full (not run)",
            f"{full.judgments:,}",
            f"{full.pairs:,}",
            "-",
            f"{extrapolated:.0f}",
            f"{full.judgments / extrapolated:,.0f}",
            "-",
        ),
    ]
    print()
    print(
        f"database build (not timed): {figures['build_seconds']:.1f} s full, "
        f"{figures['subset_build_seconds']:.1f} s subset (0 = reused)"
    )
    print(table(rows))
    print(
        f"peak MiB: the exporting process's peak resident memory (VmHWM); it held "
        f"{figures['full_baseline_rss_mib']:.0f} MiB after its imports,\nso the full export "
        f"added {figures['full_added_rss_mib']:.0f} MiB."
    )
    time_ok = "PASS" if figures["meets_time_target"] else "FAIL"
    memory_ok = "PASS" if figures["meets_memory_target"] else "FAIL"
    print(
        f"full export: {figures['full_seconds']:.1f} s (target < {TARGET_SECONDS:.0f} s): {time_ok}"
    )
    print(
        f"peak memory: {figures['full_peak_rss_mib']:.0f} MiB "
        f"(target < {TARGET_PEAK_MIB:.0f} MiB): {memory_ok}"
    )
    print(
        f"speedup over the naive ORM loop on the subset: {figures['speedup_vs_naive']:.1f}x "
        f"({figures['subset_naive_seconds']:.1f} s vs {figures['subset_ours_seconds']:.2f} s)"
    )


# ---- main ------------------------------------------------------------------------------


def benchmark(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    full = Shape(args.pairs, args.judgments)
    subset_pairs = max(1, round(args.pairs * args.subset_judgments / args.judgments))
    subset = Shape(subset_pairs, args.subset_judgments)
    builds = (
        build(folder / "full", full, args.keep_db),
        build(folder / "subset", subset, args.keep_db),
    )
    runs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-out-") as out:
        for name, variant, shape in (
            ("full", "ours", full),
            ("subset_ours", "ours", subset),
            ("subset_naive", "naive", subset),
        ):
            root = folder / ("full" if shape is full else "subset")
            runs[name] = run = in_child(variant, root, Path(out) / name)
            print(
                f"{name}: {run['rows']:,} rows in {run['seconds']:.2f} s, "
                f"peak {run['peak_mib']:.0f} MiB",
                flush=True,
            )
    figures = summarize(full, subset, builds, runs)
    print_report(full, subset, figures)
    return figures


main = benchmark_main(parse_args, "bench-export-", benchmark)


if __name__ == "__main__":
    raise SystemExit(main())
