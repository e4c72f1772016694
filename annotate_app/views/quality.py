"""Lead page: annotation quality per annotator and per round.

A figure that cannot be computed yet (no gold pairs judged, no pair with two votes) is
None in the report and shown as a dash, with a sentence saying why.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from annotate_app.state import require_lead, sessions
from rlhf_train.judgments.quality import quality_report
from rlhf_train.judgments.ranking_quality import ranking_quality

NO_FIGURE = "–"

require_lead()
st.title("Quality")


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_FIGURE
    # Rates and seconds as three decimals: the column holds text once a dash is in it.
    return f"{value:.3f}" if isinstance(value, float) else value


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as displayed: a missing figure is a dash, not "None"."""
    return frame.map(_cell)


def _table(rows: list[dict[str, object]]) -> None:
    st.dataframe(_shown(pd.DataFrame(rows)), hide_index=True)


with sessions()().connection() as connection:
    annotators, rounds = quality_report(connection)
    ranked_rounds, rankers = ranking_quality(connection)

if not annotators:
    st.info("No judgments yet.")
    st.stop()

table = pd.DataFrame(
    [
        {
            "annotator": a.name,
            "judgments": a.judgments,
            "median s": a.median_seconds,
            "tie rate": a.tie_rate,
            "skip rate": a.skip_rate,
            "left-side rate": a.left_rate,
            "gold accuracy": a.gold_accuracy,
            "agreement with majority": a.agreement_with_majority,
        }
        for a in annotators
    ]
)
st.subheader("Annotators")
st.caption(
    "Left-side rate: the share of A/B choices that picked the response shown on the left; "
    "far from 0.5 means position bias. Agreement with majority: with the majority of the "
    "other annotators, where they have one. A dash: no gold pair or no pair with other "
    "votes judged yet."
)
st.dataframe(_shown(table), hide_index=True)
st.bar_chart(
    table.set_index("annotator")[["gold accuracy", "agreement with majority", "left-side rate"]],
    stack=False,
)
st.bar_chart(table.set_index("annotator")[["judgments"]])

st.subheader("Rounds")
_table(
    [
        {
            "round": r.number,
            "status": r.status,
            "votes": r.votes,
            "pairs with votes": r.pairs_with_votes,
            "pairwise agreement": r.pairwise_agreement,
            "Krippendorff's alpha": r.krippendorff_alpha,
        }
        for r in rounds
    ]
)

if ranked_rounds:
    st.subheader("Rankings")
    st.caption(
        "Ranking rounds: the mean Kendall tau-b (1: the same order, 0: unrelated, -1: "
        "reversed; ties allowed) between every two annotators who ranked the same task. "
        "Per pair agreement over the pairs the rankings give is in `rlhf export`'s "
        "summary; the tables above count pair votes only. Gold: the share of gold tasks "
        "whose known best the annotator put alone on top, and the tau-b against gold "
        "tasks with a known full order."
    )
    _table(
        [
            {
                "round": r.number,
                "K": r.rank_k,
                "rankings": r.rankings,
                "tasks ranked twice or more": r.tasks_ranked_twice,
                "mean Kendall tau-b": r.mean_kendall_tau,
            }
            for r in ranked_rounds
        ]
    )
    _table(
        [
            {
                "annotator": a.name,
                "rankings": a.rankings,
                "gold tasks": a.gold_tasks,
                "gold best agreement": a.gold_best_agreement,
                "gold Kendall tau-b": a.gold_kendall_tau,
            }
            for a in rankers
        ]
    )
