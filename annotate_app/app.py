"""Entry point of the Streamlit app (`rlhf serve` runs it).

Until the annotation pages land, it shows the rounds and how many pairs each holds.
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory
from db.errors import UserError
from db.rounds import round_summaries


@st.cache_resource
def _sessions(url: str) -> sessionmaker[Session]:
    # One engine per server process, shared by every browser session.
    return session_factory(make_engine(url))


def main() -> None:
    st.set_page_config(page_title="prefloop", layout="wide")
    st.title("prefloop")
    url = os.environ.get("RLHF_DB_URL")
    if not url:
        st.error("RLHF_DB_URL is not set; start the app with `rlhf serve`.")
        return
    try:
        with _sessions(url)() as session:
            summaries = round_summaries(session)
    except UserError as exc:
        st.error(str(exc))
        return
    if not summaries:
        st.info("No rounds yet. Generate one with `rlhf generate --round 1`.")
        return
    st.subheader("Rounds")
    table = pd.DataFrame(
        [
            {
                "round": s.number,
                "status": s.status,
                "policy": s.policy,
                "previous policy": s.previous_policy or "",
                "prompts": s.prompts,
                "pairs": s.pairs,
                "judgments": s.judgments,
                "judgments needed": s.judgments_needed,
            }
            for s in summaries
        ]
    )
    st.dataframe(table, hide_index=True)
    for s in summaries:
        if s.status == "open":
            st.metric(f"Round {s.number}: pairs ready to annotate", s.pairs)


main()
