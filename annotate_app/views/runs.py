"""Lead page: start a retraining job and watch the training runs live.

The form queues a retraining job (`enqueue_retraining`); a worker (`rlhf worker`) runs
it. Below it, the runs table and the selected run's detail sit in a fragment that
refreshes itself every few seconds while a run is queued or running, without rerunning
the page (so what is typed in the form stays). Logs and errors are written by training
code and may quote model output: they are shown as text only (st.code, table cells).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from annotate_app.plain import literal
from annotate_app.run_view import (
    CANCELLABLE,
    OPTIMIZERS,
    TAIL_LINES,
    age,
    curve_groups,
    loop_settings,
    numeric_curves,
    read_log_records,
    run_error,
    run_files,
    run_label,
    step_rows,
    table_order,
    tail_lines,
    workspace_root,
)
from annotate_app.state import require_lead, sessions, write
from db.errors import UserError
from db.models import TrainingRun, utcnow
from db.retraining import enqueue_retraining
from db.runs import ACTIVE, RETRYABLE, child_runs, list_runs, request_cancel, retry_run
from rlhf_train.config import LoopSettings
from rlhf_train.loop.launcher import check_workspace_launcher

REFRESH_SECONDS = 2.0
NOTICE_KEY = "runs_notice"

lead = require_lead()
st.title("Training runs")

try:
    loop = loop_settings()
except UserError as error:
    st.error(literal(str(error)))  # it may quote rlhf.toml's values
    loop = LoopSettings()

with st.form("start_retraining"):
    st.caption(
        "Retrains from the newest round's judgments: reward model, policy optimization, "
        "evaluation, and the next round's samples."
    )
    optimizer = st.selectbox(
        "Optimizer",
        OPTIMIZERS,
        index=OPTIMIZERS.index(loop.optimizer) if loop.optimizer in OPTIMIZERS else 0,
        key="run_optimizer",
    )
    notes = st.text_input("Notes (optional)", key="run_notes")
    submitted = st.form_submit_button("Start retraining")
if submitted:
    try:
        # A launcher that cannot start is refused now, not when the worker takes the job.
        check_workspace_launcher(workspace_root())
        with write() as session:
            job = enqueue_retraining(
                session,
                {"optimizer": optimizer, "notes": notes, "requested_in": "app"},
                lead.id,
                loop.min_judgments,
            )
            job_id, round_number = job.id, job.config.get("round")
    except UserError as error:
        st.error(literal(str(error)))
    else:
        st.success(
            f"Queued retraining run #{job_id} (round {round_number}, {optimizer}); "
            "`rlhf worker` runs it."
        )


def _act(action, run_id: int, done: str) -> None:
    """Cancel or retry, then redraw the fragment so the detail shows the new state."""
    try:
        with write() as session:
            action(session, run_id)
    except UserError as error:
        st.session_state[NOTICE_KEY] = ("error", str(error), run_id)
    else:
        st.session_state[NOTICE_KEY] = ("success", done, run_id)
    st.rerun(scope="fragment")


def _curves(records_path: Path | None) -> bool:
    """Line charts of a JSON-lines log's numeric keys, grouped by scale; False if none."""
    frame = numeric_curves(read_log_records(records_path))
    if frame.empty:
        return False
    groups = list(curve_groups(frame.columns).items())
    for start in range(0, len(groups), 2):
        for column, (title, names) in zip(st.columns(2), groups[start : start + 2], strict=False):
            with column:
                st.caption(title)
                st.line_chart(frame[names], x_label="step", height=240)
    return True


def _detail(run: TrainingRun, steps: list[TrainingRun]) -> None:
    st.subheader(f"Run #{run.id} · {run.kind}")
    progress = min(1.0, max(0.0, run.progress or 0.0))
    st.progress(progress, text=f"{progress:.0%} done")
    status, attempts, heartbeat = st.columns(3)
    status.metric("Status", run.status)
    attempts.metric("Attempts", run.attempts)
    heartbeat.metric("Heartbeat", age(run.heartbeat_at, utcnow()))
    if run.worker:
        st.text(f"Worker: {run.worker}")
    processes = (run.metrics or {}).get("processes")
    if processes:
        # Recorded when the run started (a job: the most any of its steps used).
        st.text(f"Processes: {processes}")
    if run.status == "running" and run.cancel_requested:
        st.warning("Cancel requested: the worker stops the run at its next check.")
    error = run_error(run)
    if error:
        st.caption("Error")
        st.code(error, language=None)

    cancellable = run.status in CANCELLABLE and not run.cancel_requested
    if cancellable and st.button("Cancel run", key=f"cancel_{run.id}"):
        _act(request_cancel, run.id, f"Cancel of run #{run.id} requested.")
    if run.status in RETRYABLE:
        if run.parent_id is None:
            if st.button("Retry run", key=f"retry_{run.id}"):
                _act(retry_run, run.id, f"Run #{run.id} is queued again.")
        else:
            st.caption(f"A step of job #{run.parent_id}: retry the job to resume it.")

    if run.kind == "round":
        rows = step_rows(run.metrics)
        st.caption("Steps")
        if rows:
            # A value one step has and another lacks is an empty cell, not "None".
            st.dataframe(pd.DataFrame(rows).fillna(""), hide_index=True)
        else:
            st.text("No step has started yet.")

    st.caption("Curves")
    records, output = run_files(run, workspace_root())
    shown = _curves(records)
    for step in steps:
        st.text(f"Step run #{step.id} · {step.kind} · {step.status}")
        step_records, _ = run_files(step, workspace_root())
        shown = _curves(step_records) or shown
    if not shown:
        st.text("No curves yet: the run has logged no numbers.")

    tail = tail_lines(output)
    st.caption(f"Output, last {TAIL_LINES} lines" + (f" of `{output}`" if output else ""))
    if tail:
        st.code(tail, language=None, height=400)
    else:
        st.text("No output yet.")


def live(refreshing: bool) -> None:
    """The runs table and the selected run; a fragment, so refreshes redraw only this."""
    with sessions()() as session:
        runs = list_runs(session)
        rows = table_order(runs)
        selected_id = st.session_state.get("selected_run")
        selected = next((row.run for row in rows if row.run.id == selected_id), None)
        if selected is None and rows:
            selected = rows[0].run
        steps = child_runs(session, selected.id) if selected is not None else []
    # Whether to refresh is decided by a full run of the page; rerun it when that
    # decision changed (a run finished, or one was queued from the command line).
    active = any(run.status in ACTIVE for run in runs)
    if active != refreshing:
        st.rerun()

    # The outcome of Cancel or Retry stays until the lead acts again or picks another run:
    # the fragment redraws every few seconds, and a message gone after one redraw is
    # easily missed (or never drawn, when a redraw cuts the one that would show it).
    notice = st.session_state.get(NOTICE_KEY)
    if notice is not None and (selected is None or notice[2] != selected.id):
        del st.session_state[NOTICE_KEY]
    elif notice is not None:
        kind, text, _ = notice
        (st.error if kind == "error" else st.success)(literal(text))
    if not rows:
        st.info("No training runs yet. Start a retraining above, or `rlhf train ...`.")
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "run": row.run.id,
                    "part of": f"#{row.part_of}" if row.part_of else "",
                    "kind": row.run.kind,
                    "status": row.run.status,
                    "progress": min(1.0, max(0.0, row.run.progress or 0.0)),
                    "attempts": row.run.attempts,
                    "created": row.run.created_at,
                    "finished": row.run.finished_at,
                    "notes": str((row.run.config or {}).get("notes", "")),
                    "error": run_error(row.run),
                }
                for row in rows
            ]
        ),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)
        },
    )
    labels = {row.run.id: run_label(row.run) for row in rows}
    st.selectbox(
        "Run",
        list(labels),
        index=list(labels).index(selected.id),
        format_func=labels.get,
        key="selected_run",
    )
    _detail(selected, steps)


with sessions()() as session:
    refreshing = any(run.status in ACTIVE for run in list_runs(session))
st.fragment(live, run_every=REFRESH_SECONDS if refreshing else None)(refreshing)
# Without a run in progress nothing refreshes by itself; a run queued from the command
# line shows after this.
if not refreshing and st.button("Refresh", key="refresh_runs"):
    st.rerun()
