"""What the Training runs page shows, shaped in plain Python so it can be tested without
a browser: the runs in table order, a run's files, its curves, the tail of its output,
and a retraining job's steps.

Everything read from files here is written by a training process that may be working
at this very moment (a half-written last line) or may have crashed (a truncated file),
so the readers skip what they cannot parse instead of failing the page.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from db.models import TrainingRun
from db.runs import ACTIVE
from rlhf_train.config import LoopSettings, load_config

# request_cancel takes exactly the active runs.
CANCELLABLE = ACTIVE
OPTIMIZERS = ("ppo", "dpo", "rloo", "grpo")
TAIL_LINES = 40
# The tail is read from the end of the file, so a multi-gigabyte log costs no more than
# a small one.
TAIL_BYTES = 64 * 1024
# Keys of a log record that are its position, not a curve.
POSITION_KEYS = ("step", "epoch")


def workspace_root() -> Path | None:
    """The workspace `rlhf serve` runs the app for (RLHF_WORKSPACE), if it said."""
    value = os.environ.get("RLHF_WORKSPACE")
    return Path(value) if value else None


def loop_settings() -> LoopSettings:
    """The workspace's [loop] settings; the defaults when the app runs without one.

    Raises UserError (one sentence) for an invalid rlhf.toml.
    """
    root = workspace_root()
    # load_config only reads root/rlhf.toml if it exists, so a missing workspace gives
    # the defaults plus any RLHF_* variables, the same as the CLI would use.
    return load_config(root if root is not None else Path("/nonexistent-workspace")).loop


@dataclass(frozen=True)
class TableRow:
    """One run in the runs table: jobs first-level, each job's step runs right after it."""

    run: TrainingRun
    part_of: int | None  # the retraining job this run is a step of


def table_order(runs: Sequence[TrainingRun]) -> list[TableRow]:
    """Top-level runs in the given order (newest first), each followed by its steps in
    the order they started; a step whose job is not in `runs` stands on its own."""
    present = {run.id for run in runs}
    steps: dict[int, list[TrainingRun]] = {}
    for run in runs:
        if run.parent_id is not None and run.parent_id in present:
            steps.setdefault(run.parent_id, []).append(run)
    rows: list[TableRow] = []
    for run in runs:
        if run.parent_id is not None and run.parent_id in present:
            continue
        rows.append(TableRow(run, run.parent_id))
        for step in sorted(steps.get(run.id, []), key=lambda r: r.id):
            rows.append(TableRow(step, run.id))
    return rows


def run_label(run: TrainingRun) -> str:
    """How a run is named in the selector; only what never changes, so the selection
    survives the run's status changing under it."""
    label = f"#{run.id} {run.kind}"
    if run.parent_id is not None:
        label += f" (step of #{run.parent_id})"
    return label


def run_error(run: TrainingRun) -> str:
    error = (run.metrics or {}).get("error")
    return "" if error is None else str(error)


def run_files(run: TrainingRun, workspace: Path | None) -> tuple[Path | None, Path | None]:
    """The run's JSON-lines log and the file with its whole output (stdout and stderr).

    A run that has not started has no log_path yet; its files will be in the
    workspace's logs folder under the run's number.
    """
    if run.log_path:
        records = Path(run.log_path)
    elif workspace is not None:
        records = workspace / "logs" / f"run-{run.id}.jsonl"
    else:
        return None, None
    return records, records.with_suffix(".log")


def read_log_records(path: Path | None) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; lines that are not a JSON object are skipped
    (the last one may be half-written while the run works)."""
    if path is None or not path.is_file():
        return []
    records = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _number(value: Any) -> float | None:
    # bool is an int in Python, but a flag is not a curve.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def numeric_curves(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per logged step, one column per numeric key (text, lists and the sample
    records are left out). Records without a step are numbered in order; several
    records of one step (a train and an eval log event) become one row."""
    rows = []
    for position, record in enumerate(records):
        if "step" in record and _number(record["step"]) is None:
            # A retraining job's step events ({"event": "step", "step": "reward", ...}):
            # what happened, not a point of a curve.
            continue
        numbers = {}
        for key, value in record.items():
            number = _number(value)
            if number is not None and key not in POSITION_KEYS:
                numbers[str(key)] = number
        if not numbers:
            continue
        step = _number(record.get("step"))
        numbers["step"] = step if step is not None else float(position)
        rows.append(numbers)
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).groupby("step", sort=True).last()
    if (frame.index == frame.index.astype(int)).all():
        frame.index = frame.index.astype(int)  # whole steps read better on the axis
    return frame


# Which chart a curve goes to, by what its key says it is; the first match wins (so
# "loss/value" is a loss, not "other").
CURVE_GROUPS = (
    ("Loss", ("loss",)),
    ("KL", ("kl",)),
    ("Reward", ("reward", "score")),
)
OTHER_GROUP = "Other"


def curve_groups(columns: Iterable[str]) -> dict[str, list[str]]:
    """Columns grouped into charts of comparable scale: loss, KL, reward and the rest."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        lowered = column.lower()
        name = next(
            (title for title, words in CURVE_GROUPS if any(word in lowered for word in words)),
            OTHER_GROUP,
        )
        groups.setdefault(name, []).append(column)
    order = [title for title, _ in CURVE_GROUPS] + [OTHER_GROUP]
    return {title: groups[title] for title in order if title in groups}


def tail_lines(path: Path | None, count: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last `count` lines of a text file ("" when it does not exist), decoded
    leniently: a run's output may hold any bytes."""
    if path is None or not path.is_file():
        return ""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line read is most likely cut in the middle
    return "\n".join(lines[-count:])


def age(moment: datetime | None, now: datetime) -> str:
    """'12 s ago', '3 min ago', '2 h ago', or 'never'."""
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def _cell(value: Any) -> str:
    """A value as table text: a table column of mixed types does not display."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def step_rows(metrics: dict[str, Any] | None) -> list[dict[str, str]]:
    """A retraining job's steps (metrics["steps"], {step name: what it recorded}), one
    row each with the step's values as text and the current step marked."""
    metrics = metrics or {}
    steps = metrics.get("steps")
    if isinstance(steps, list):
        # Also accept a list of {"name": ..., ...}, in case a writer prefers order.
        steps = {
            str(item.get("name", i)): item for i, item in enumerate(steps) if isinstance(item, dict)
        }
    if not isinstance(steps, dict):
        return []
    current = metrics.get("current_step")
    rows = []
    for name, values in steps.items():
        row = {"step": str(name), "current": "◀" if name == current else ""}
        if isinstance(values, dict):
            for key, value in values.items():
                if key != "name":
                    row[str(key)] = _cell(value)
        else:
            row["value"] = _cell(values)
        rows.append(row)
    if isinstance(current, str) and current not in steps:
        # A step is recorded when it ends; the one under way has only its name so far.
        rows.append({"step": current, "current": "◀"})
    return rows
