"""The benchmark's annotators: what one does per operation, and the three loads that
bench/annotate.py runs with them (one alone, a closed loop of many back to back in client
processes, an open loop of Poisson arrivals).

One operation is what the annotate page does on submit: record the judgment of the
current pair (`submit_judgment`), then fetch the next pair (`fetch_next_pair`), each in
its own transaction (on PostgreSQL with row locks, each one autocommitted call). The
mix also holds what annotators do besides: a double submit (the form sent twice, the
second time maybe with another answer: the one row is updated) in DOUBLE_SUBMIT_P of
operations, and an undo of the judgment just made, then judging that pair again, in
UNDO_P. Gold pairs come at the round's gold rate, and every shown pair is
leased, as on the page.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from common import CpuClock, cpu_clock
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import session_factory, transaction
from db.judgments import (
    Assignment,
    PairUnavailable,
    fetch_next_pair,
    read_progress,
    set_locking,
    submit_judgment,
    undo_last,
)

SEED = 0
SKIP_P = 0.05
CHOICE_WEIGHTS = {"A": 0.42, "B": 0.42, "tie": 0.06, "both_bad": 0.05, "skip": SKIP_P}
DOUBLE_SUBMIT_P = 0.03
UNDO_P = 0.02
CONCURRENT_WARMUP = 5  # untimed operations per annotator before a closed loop's timed ones
STARTUP_SECONDS = 300  # for the client processes to start and warm up


@dataclass
class Tally:
    """What one annotator did: timings of counted operations in ms, and every judgment
    whose transaction committed (undone ones removed), warm-up included."""

    annotator_id: int
    record_ms: list[float] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    # Open loop: ms from the operation's arrival to its end, queueing included.
    arrival_ms: list[float] = field(default_factory=list)
    recorded: dict[int, str] = field(default_factory=dict)  # pair id -> choice
    submitted: int = 0
    refused: int = 0
    double_submits: int = 0
    undos: int = 0
    reshown: int = 0  # next_pair gave back a pair this annotator had judged
    errors: list[str] = field(default_factory=list)
    ran_out: bool = False
    timed_out: bool = False
    current: Assignment | None = None

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
    return fetch_next_pair(factory, tally.annotator_id, rng=rng)


def submit(factory: sessionmaker[Session], tally: Tally, pair_id: int, rng: random.Random) -> bool:
    """Record a judgment of the pair; False if it was refused (others filled it)."""
    form = choose(rng)
    try:
        submit_judgment(factory, tally.annotator_id, pair_id, **form)
    except PairUnavailable:
        tally.refused += 1
        return False
    tally.recorded[pair_id] = form["choice"]
    return True


def undo(factory: sessionmaker[Session], tally: Tally) -> None:
    with transaction(factory) as session:
        pair_id = undo_last(session, tally.annotator_id)
    if pair_id is not None:
        tally.undos += 1
        tally.recorded.pop(pair_id, None)


def operation(factory: sessionmaker[Session], tally: Tally, rng: random.Random) -> bool:
    """Judge the current pair and fetch the next (timed into the tally when `timed`);
    False when no pair is left."""
    current = tally.current
    if current is None:
        tally.ran_out = True
        return False
    tally.reshown += current.pair_id in tally.recorded
    tally.submitted += 1
    started = time.perf_counter()
    try:
        accepted = submit(factory, tally, current.pair_id, rng)
        if accepted and rng.random() < DOUBLE_SUBMIT_P:
            tally.double_submits += 1
            submit(factory, tally, current.pair_id, rng)
        recorded = time.perf_counter()
        if accepted and rng.random() < UNDO_P:
            undo(factory, tally)
        tally.current = fetch(factory, tally, rng)
    except Exception as exc:  # anything but PairUnavailable is a finding, not a crash
        tally.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
        tally.current = fetch(factory, tally, rng)
        return True
    done = time.perf_counter()
    tally.record_ms.append((recorded - started) * 1000)
    tally.next_ms.append((done - recorded) * 1000)
    return True


def annotate(
    factory: sessionmaker[Session],
    tally: Tally,
    operations: int,
    warmup: int,
    start: Callable[[], None] | None = None,
    deadline: Callable[[], float] = lambda: float("inf"),
) -> None:
    """Open the page (one next_pair), `warmup` untimed operations, then (after `start`
    returns) `operations` timed ones. Stops early when no pair is left, or at `deadline()`
    (a `time.monotonic()` value)."""
    rng = random.Random(f"{SEED}-{tally.annotator_id}")
    tally.current = fetch(factory, tally, rng)
    for _ in range(warmup):
        if not operation(factory, tally, rng):
            break
    tally.record_ms.clear()
    tally.next_ms.clear()
    if start is not None:
        start()
    for _ in range(operations):
        if time.monotonic() > deadline():
            tally.timed_out = True
            return
        if not operation(factory, tally, rng):
            return


@dataclass(frozen=True)
class Timing:
    """Wall seconds of a run, and the cores other processes kept busy meanwhile (the
    PostgreSQL server's, and in a closed loop the client processes', among them)."""

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
    before: list[CpuClock] = []
    annotate(factory, tally, operations, warmup, start=lambda: before.append(cpu_clock()))
    return [tally], Timing.between(before[0], cpu_clock())


def run_threads(
    factory: sessionmaker[Session],
    annotator_ids: list[int],
    operations: int,
    max_seconds: float,
    start: Callable[[], None] | None = None,
) -> list[Tally]:
    """One thread per annotator, each with CONCURRENT_WARMUP untimed operations; the timed
    ones start together once every thread is warm and `start` (if given) returned."""
    tallies = [Tally(annotator_id) for annotator_id in annotator_ids]
    ready = threading.Barrier(len(tallies), action=start)
    deadline: list[float] = []

    def begin() -> None:
        ready.wait()
        if not deadline:
            deadline.append(time.monotonic() + max_seconds)

    def guarded(tally: Tally) -> None:
        try:
            annotate(factory, tally, operations, CONCURRENT_WARMUP, begin, lambda: deadline[0])
        except Exception as exc:  # recorded, not lost in a thread
            tally.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            if not ready.broken and tally.record_ms == []:
                ready.abort()

    threads = [threading.Thread(target=guarded, args=(tally,)) for tally in tallies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies


def _client(
    url: str,
    locking: str,
    annotator_ids: list[int],
    operations: int,
    max_seconds: float,
    go: Any,
    results: Any,
) -> None:
    """A client process: its annotators as threads on its own engine (one connection
    each), warm, then waiting at the shared barrier `go` with the other processes."""
    set_locking(locking)
    engine = create_engine(
        url, pool_size=len(annotator_ids), max_overflow=0, connect_args={"connect_timeout": 5}
    )
    try:
        tallies = run_threads(
            session_factory(engine), annotator_ids, operations, max_seconds, start=go.wait
        )
        results.put((tallies, time.monotonic()))
    finally:
        engine.dispose()


def run_closed_loop(
    url: str,
    locking: str,
    annotator_ids: list[int],
    operations: int,
    max_seconds: float,
    processes: int,
) -> tuple[list[Tally], Timing]:
    """The annotators back to back (no thinking time), split over `processes` client
    processes so that Python's GIL is not the bottleneck; timed from the moment every
    annotator is warm to the moment the last finishes."""
    context = multiprocessing.get_context("spawn")
    shares = [share for n in range(processes) if (share := annotator_ids[n::processes])]
    go = context.Barrier(len(shares) + 1, timeout=STARTUP_SECONDS)
    results = context.Queue()
    clients = [
        context.Process(
            target=_client, args=(url, locking, share, operations, max_seconds, go, results)
        )
        for share in shares
    ]
    for client in clients:
        client.start()
    go.wait()
    before = cpu_clock()
    tallies: list[Tally] = []
    ends = []
    for _ in clients:
        try:
            done, ended = results.get(timeout=max_seconds + 120)
        except queue.Empty:
            break
        tallies += done
        ends.append(ended)
    after = cpu_clock()
    for client in clients:
        client.join(timeout=30)
    seconds = (max(ends) if ends else time.monotonic()) - before.wall
    timing = Timing.between(before, after)
    return tallies, Timing(seconds, timing.other_cores)


def run_open_loop(
    factory: sessionmaker[Session],
    annotator_ids: list[int],
    rate: float,
    seconds: float,
    workers: int,
) -> tuple[list[Tally], Timing]:
    """Operations arriving at `rate` per second (Poisson: exponential gaps) for `seconds`,
    each from an annotator not in an operation already, each run by the next free worker
    of `workers` threads on its own pooled connection; the time of an operation runs from
    its arrival, so waiting for a worker or a connection counts."""
    tallies = {annotator_id: Tally(annotator_id) for annotator_id in annotator_ids}
    rngs = {annotator_id: random.Random(f"{SEED}-{annotator_id}") for annotator_id in tallies}
    with ThreadPoolExecutor(workers) as pool:  # every annotator opens the page: untimed
        for tally in tallies.values():
            pool.submit(_open_page, factory, tally, rngs[tally.annotator_id])
    idle = list(tallies)
    idle_lock = threading.Lock()
    arrivals = random.Random(f"{SEED}-arrivals")

    def run(annotator_id: int, arrived: float) -> None:
        tally = tallies[annotator_id]
        try:
            operation(factory, tally, rngs[annotator_id])
            tally.arrival_ms.append((time.perf_counter() - arrived) * 1000)
        finally:
            with idle_lock:
                idle.append(annotator_id)

    before = cpu_clock()
    with ThreadPoolExecutor(workers) as pool:
        due = time.perf_counter()
        end = due + seconds
        while True:
            due += arrivals.expovariate(rate)
            if due > end:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            with idle_lock:
                if not idle:
                    continue  # every annotator busy: the arrival is dropped (never seen)
                annotator_id = idle.pop(arrivals.randrange(len(idle)))
            pool.submit(run, annotator_id, due)
    return list(tallies.values()), Timing.between(before, cpu_clock())


def _open_page(factory: sessionmaker[Session], tally: Tally, rng: random.Random) -> None:
    try:
        tally.current = fetch(factory, tally, rng)
    except Exception as exc:  # recorded with the annotator's other findings
        tally.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])


def time_progress(factory: sessionmaker[Session], annotator_id: int, calls: int) -> list[float]:
    """ms of `read_progress` (the page's progress bar), each in its own session, from
    opening it to closing it."""
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        read_progress(factory, annotator_id)
        timings.append((time.perf_counter() - started) * 1000)
    return timings
