"""The Progress page's Leaderboard section: policies rated from the annotators' votes on
pairs of two different policies (Bradley–Terry, rlhf_train.judgments.ratings), with
95% bootstrap intervals as bars, votes per policy, the pairs never compared and the
policies that cannot be placed.

Policy names are typed by users: they appear in chart labels, table cells and st.text,
never in Markdown.
"""

from __future__ import annotations

import altair as alt
import streamlit as st

from annotate_app.progress_data import (
    RESAMPLES,
    compute_leaderboard,
    leaderboard_stamp,
    never_compared_frame,
    rating_frame,
)
from annotate_app.state import sessions
from rlhf_train.judgments.ratings import Leaderboard

STYLE_KEY = "leaderboard_style"


# Fitting 1,000 resamples takes about a second on a large database; the stamp changes
# with every new or changed judgment, so a cached board is never stale.
@st.cache_data(max_entries=16, show_spinner="Fitting the ratings…")
def _board(stamp: tuple, style_control: bool) -> Leaderboard | str:
    with sessions()() as session:
        return compute_leaderboard(session, style_control)


def _chart(board: Leaderboard) -> alt.LayerChart:
    frame = rating_frame(board)[["policy", "rating", "low", "high", "votes"]]
    y = alt.Y("policy:N", sort=list(frame["policy"]), title=None, axis=alt.Axis(labelLimit=320))
    base = alt.Chart(frame).encode(y=y)
    bars = base.mark_rule(strokeWidth=5, opacity=0.5).encode(
        x=alt.X("low:Q", title="rating, 95% interval", scale=alt.Scale(zero=False, padding=24)),
        x2="high:Q",
    )
    points = base.mark_point(filled=True, size=110, opacity=1).encode(
        x="rating:Q", tooltip=["policy", "rating", "low", "high", "votes"]
    )
    return bars + points


def show_leaderboard() -> None:
    st.subheader("Leaderboard")
    with st.container(key="leaderboard"):
        style = st.toggle("Style control: compare policies at equal response length", key=STYLE_KEY)
        with sessions()() as session:
            stamp = leaderboard_stamp(session)
        board = _board(stamp, style)
        if isinstance(board, str):
            st.text(board)
            return
        st.caption(
            "Bradley–Terry ratings from every vote on a pair of two different policies "
            "(a tie is half a win each; both bad and skips do not count). 400 points are "
            "10:1 odds; the bars are 95% intervals from resampling prompts. Overlapping "
            "bars: the votes do not yet say which of the two is better. The anchor is fixed "
            "at 1000, so its bar is a point: the others are measured against it."
        )
        st.text(
            f"Anchor (rating 1000): {board.anchor}. {board.n_votes} votes, "
            f"{RESAMPLES} bootstrap resamples."
        )
        if board.length_coefficient is not None:
            st.text(
                f"Length effect: {board.length_coefficient:+.3f} on the log-odds per unit of "
                "(words A - words B) / (words A + words B); the ratings are at equal length."
            )
        # A band of its own for each policy, whatever the page's default chart height.
        height = 48 * len(board.ratings) + 70
        st.altair_chart(_chart(board), width="stretch", height=height)
        with st.container(key="leaderboard_table"):
            st.dataframe(rating_frame(board), hide_index=True)
        if board.never_compared:
            st.text("Never compared directly (their order rests on the others):")
            with st.container(key="never_compared"):
                st.dataframe(never_compared_frame(board), hide_index=True)
        if board.unplaced:
            st.text(
                "Not placed (no chain of votes connects them to the anchor): "
                + ", ".join(board.unplaced)
            )
