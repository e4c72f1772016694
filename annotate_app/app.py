"""Entry point of the Streamlit app (`rlhf serve` runs it): login, then the pages the
user's role allows. Pages not in the navigation cannot be opened by URL, and every lead
page checks the role again on the server.

A database that does not answer is caught here, around the whole run, for every page:
one sentence, and the run is tried again by itself (annotate_app/outage.py)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from annotate_app.outage import is_outage, show_and_retry
from annotate_app.state import current_user, draw_cookie_change, log_out

# Not "pages": Streamlit would serve a folder of that name as pages of its own,
# outside this navigation.
PAGES = Path(__file__).resolve().parent / "views"
# The lead pages' URL paths. A logged-out visitor of one gets the login form at that
# address, so that the run after the login opens the page asked for (if the role has it).
LEAD_PATHS = ("rounds", "quality", "users", "runs", "progress")


def _login() -> None:
    draw_cookie_change()
    login = PAGES / "login.py"
    pages = [st.Page(login, title="Log in", default=True)]
    pages += [
        st.Page(login, title="Log in", url_path=path, visibility="hidden") for path in LEAD_PATHS
    ]
    st.navigation(pages, position="hidden").run()


def main() -> None:
    st.set_page_config(page_title="prefloop", layout="wide")
    user = current_user()
    if user is None:
        _login()
        return
    # Leads land on Rounds: opening Annotate leases a pair, which a lead who came to
    # manage the round would hold from the annotators for the lease's ten minutes.
    annotate = st.Page(
        PAGES / "annotate.py", title="Annotate", url_path="annotate", default=not user.is_lead
    )
    pages = {"Annotate": [annotate]}
    if user.is_lead:
        pages["Lead"] = [
            # Served at the root; /rounds (a link, a bookmark) stays the same page.
            st.Page(PAGES / "rounds.py", title="Rounds", url_path="lead", default=True),
            st.Page(PAGES / "rounds.py", title="Rounds", url_path="rounds", visibility="hidden"),
            st.Page(PAGES / "quality.py", title="Quality", url_path="quality"),
            st.Page(PAGES / "users.py", title="Users", url_path="users"),
            st.Page(PAGES / "runs.py", title="Training runs", url_path="runs"),
            st.Page(PAGES / "progress.py", title="Progress", url_path="progress"),
        ]
    navigation = st.navigation(pages)
    with st.sidebar:
        # A name is typed by a lead: text, never Markdown (an image in it would be fetched).
        st.text(f"Logged in as {user.name} ({user.role})")
        if st.button("Log out", key="logout"):
            log_out()
            st.rerun()
        # In the sidebar, under the button, so that the page itself does not move.
        draw_cookie_change()
    navigation.run()


try:
    main()
except Exception as error:
    if not is_outage(error):
        raise
    show_and_retry(error)
