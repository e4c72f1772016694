"""`rlhf runs show N`: a run as a lead reads it, in the terminal."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from db.models import Model, Round
from db.runs import child_runs, get_run
from rlhf_train.workspace import Workspace


def log_tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a text file; none when it does not exist yet."""
    if lines <= 0 or not path.is_file():
        return []
    with path.open(encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]


def _short(value: object, width: int = 100) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_run(workspace: Workspace, run_id: int, log_lines: int = 20) -> str:
    with workspace.sessions() as session:
        run = get_run(session, run_id)
        round_ = session.get(Round, run.round_id) if run.round_id else None
        output = session.get(Model, run.output_model_id) if run.output_model_id else None
        steps = child_runs(session, run.id)
        lines = [
            f"Run {run.id}: {run.kind}, {run.status}, {run.progress:.0%} "
            f"(attempt {run.attempts or 1}{', held by ' + run.worker if run.worker else ''})",
        ]
        if round_ is not None:
            lines.append(f"  learns from round {round_.number}")
        if run.parent_id:
            lines.append(f"  a step of retraining run {run.parent_id}")
        if output is not None:
            lines.append(f"  output: {output.kind} {output.name!r} at {output.path}")
        if run.cancel_requested and run.status == "running":
            lines.append("  cancel requested; the worker stops it")
        metrics = dict(run.metrics or {})
        processes = metrics.pop("processes", None)
        if processes:
            lines.append(f"  processes: {processes}")
        metrics.pop("launched_error", None)
        if "error" in metrics:
            lines.append(f"  error: {metrics.pop('error')}")
        for name, step in (metrics.pop("steps", None) or {}).items():
            outputs = ", ".join(f"{k}={_short(v, 60)}" for k, v in step.get("outputs", {}).items())
            ranks = f" ({step['processes']} processes)" if step.get("processes", 1) > 1 else ""
            lines.append(f"  step {name:<9} {step.get('seconds', 0):>7.1f} s{ranks}  {outputs}")
        metrics.pop("current_step", None)
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        if numbers:
            lines.append("  metrics: " + _short(numbers, 300))
        for step in steps:
            lines.append(f"  step run {step.id}: {step.kind}, {step.status}, {step.progress:.0%}")
        log_path = Path(run.log_path).with_suffix(".log") if run.log_path else None
    if log_path is not None:
        tail = log_tail(log_path, log_lines)
        if tail:
            lines.append(f"  last lines of {log_path}:")
            lines += [f"    {line}" for line in tail]
    return "\n".join(lines)
