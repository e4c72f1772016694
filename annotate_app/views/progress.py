"""Lead page: is the loop making the policy better? The leaderboard of policies from the
annotators' votes, the evaluations across rounds as curves, and one evaluation's samples,
old and new policy side by side.

Responses are model output: shown with st.text only, never as Markdown or HTML.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from annotate_app.leaderboard_view import show_leaderboard
from annotate_app.progress_data import (
    chart_data,
    charts,
    evaluation_points,
    progress_table,
    report_samples,
)
from annotate_app.state import require_lead, sessions

require_lead()
st.title("Progress")
# First, and shown without evaluations too: it needs only judgments.
show_leaderboard()

with sessions()() as session:
    points = evaluation_points(session)
if not points:
    st.info(
        "No evaluations yet. They appear after the first retraining finishes, or after "
        "`rlhf evaluate policy`."
    )
    st.stop()

frame, axis = progress_table(points)
st.caption(
    f"One point per evaluation (x: {axis}); each evaluation measures a policy on the same "
    "held-out prompts."
)
found = charts(frame)
if not found:
    st.text("The evaluations hold none of the figures this page plots.")
for row_start in range(0, len(found), 2):
    for column, (title, keys) in zip(st.columns(2), found[row_start : row_start + 2], strict=False):
        with column:
            st.subheader(title)
            # Lines with points: a figure that only the newest evaluation has is one
            # point, which a plain line chart would not draw at all.
            chart = (
                alt.Chart(chart_data(frame, keys))
                .mark_line(point=True)
                .encode(
                    x=alt.X(f"{axis}:O", title=axis, axis=alt.Axis(labelAngle=0)),
                    y=alt.Y("value:Q", title=None),
                    color=alt.Color("figure:N", title=None),
                    tooltip=[axis, "figure", "value"],
                )
            )
            st.altair_chart(chart, width="stretch")

st.subheader("Evaluations")
st.dataframe(
    pd.DataFrame(
        [
            {
                "evaluation": point.id,
                "round": point.round_number,
                "policy": point.policy,
                "against": point.against or "",
                "created": point.created_at,
                "report": point.report_path,
            }
            for point in points
        ]
    ),
    hide_index=True,
)

st.subheader("Samples side by side")
by_id = {point.id: point for point in points}
chosen = by_id[
    st.selectbox(
        "Evaluation",
        list(by_id),
        index=len(by_id) - 1,
        format_func=lambda evaluation_id: by_id[evaluation_id].label,
        key="progress_evaluation",
    )
]
samples = report_samples(chosen.report_path)
if not samples:
    st.text(f"No samples in this evaluation's report ({chosen.report_path}/report.json).")


def _score(score: float | None) -> str:
    return "" if score is None else f" (score {score:.3f})"


for number, sample in enumerate(samples):
    with st.container(border=True, key=f"sample_{number}"):
        st.caption("Prompt")
        with st.container(key=f"sample_{number}_prompt"):
            st.text(sample.prompt)
        before, after = st.columns(2)
        with before, st.container(key=f"sample_{number}_against"):
            # Model names are typed by users: plain text, like the responses.
            st.text(f"Before: {chosen.against or 'no other policy'}" + _score(sample.against_score))
            st.text(sample.against_response if sample.against_response is not None else "—")
        with after, st.container(key=f"sample_{number}_policy"):
            st.text(f"After: {chosen.policy}" + _score(sample.policy_score))
            st.text(sample.policy_response)
