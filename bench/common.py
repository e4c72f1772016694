"""What every benchmark shares: the JSON results file, the CPU model, and a clock that
also tells how busy other processes kept the machine during a run."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from rlhf_train.errors import UserError


def write_json(path: Path, figures: dict[str, object]) -> None:
    """Write `figures` to `path` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(path.suffix + ".tmp")
    staging.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    staging.replace(path)


def commit() -> str | None:
    """The checked-out commit a result was measured on (with "+dirty" for uncommitted
    changes), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(packages: tuple[str, ...], **extra: object) -> dict[str, object]:
    """What a result was measured on: platform, Python, CPU, cores, the versions of
    `packages` (distribution names) and `extra` figures (device, threads...)."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        **{name: version(name) for name in packages},
        **extra,
    }


@dataclass(frozen=True)
class CpuClock:
    wall: float
    busy: float  # CPU seconds all processes used since boot (0 where /proc is missing)
    own: float  # CPU seconds this process used


def cpu_clock() -> CpuClock:
    busy = 0.0
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
        # user nice system idle iowait irq softirq steal: everything but idle and iowait
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return CpuClock(time.perf_counter(), busy, usage.ru_utime + usage.ru_stime)


def other_cores(before: CpuClock, after: CpuClock) -> float:
    """Cores that other processes kept busy between two readings, on average."""
    if not after.busy:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / (after.wall - before.wall))


def run_benchmark(args, prefix: str, benchmark: Callable[[Path], dict[str, object]]) -> int:
    """What every benchmark's main does: run `benchmark` in `args.workspace`, or in a
    temporary folder removed afterwards; a user error is one line on stderr and exit 2;
    the figures go to `args.out` when it is set."""
    try:
        if args.workspace is not None:
            figures = benchmark(args.workspace.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix=prefix) as folder:
                figures = benchmark(Path(folder))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        write_json(args.out, figures)
        print(f"Wrote {args.out}")
    return 0


def benchmark_main(
    parse_args: Callable[[], object],
    prefix: str,
    benchmark: Callable[[Path, object], dict[str, object]],
) -> Callable[[], int]:
    """The main of a benchmark that needs only its folder and its arguments."""

    def main() -> int:
        args = parse_args()
        return run_benchmark(args, prefix, lambda folder: benchmark(folder, args))

    return main
