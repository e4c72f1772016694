"""Lead page: start retraining (records a queued training run) and list the runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotate_app.state import require_lead, sessions, write
from db.runs import enqueue_run, list_runs

lead = require_lead()
st.title("Training runs")

with st.form("start_retraining"):
    kind = st.selectbox("Optimizer", ["ppo", "dpo", "rloo", "grpo"], key="run_kind")
    notes = st.text_input("Notes (optional)", key="run_notes")
    if st.form_submit_button("Start retraining"):
        with write() as session:
            run = enqueue_run(
                session, kind, {"rounds": "all", "notes": notes, "requested_in": "app"}, lead.id
            )
            run_id = run.id
        st.success(f"Queued run #{run_id} ({kind}). A worker (`rlhf worker`) picks queued runs up.")

with sessions()() as session:
    runs = [
        {
            "run": r.id,
            "kind": r.kind,
            "status": r.status,
            "progress": r.progress,
            "created": r.created_at,
            "notes": (r.config or {}).get("notes", ""),
        }
        for r in list_runs(session)
    ]
if runs:
    st.dataframe(
        pd.DataFrame(runs),
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1)
        },
    )
else:
    st.info("No training runs yet.")
