"""What every page shares: the database, the logged-in user, and the role checks.

The user is kept in Streamlit's per-browser-session state; each page re-reads the user
from the database on every run, so a deactivated account or a changed role takes effect
at once, and lead pages refuse annotators on the server side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory, transaction
from db.models import User

USER_KEY = "user_id"


@st.cache_resource
def _sessions(url: str) -> sessionmaker[Session]:
    # One engine per server process, shared by every browser session.
    return session_factory(make_engine(url))


def sessions() -> sessionmaker[Session]:
    url = os.environ.get("RLHF_DB_URL")
    if not url:
        st.error("RLHF_DB_URL is not set; start the app with `rlhf serve`.")
        st.stop()
    return _sessions(url)


@contextmanager
def write() -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on error."""
    with transaction(sessions()) as session:
        yield session


@dataclass(frozen=True)
class CurrentUser:
    id: int
    name: str
    role: str

    @property
    def is_lead(self) -> bool:
        return self.role == "lead"


def current_user() -> CurrentUser | None:
    user_id = st.session_state.get(USER_KEY)
    if user_id is None:
        return None
    with sessions()() as session:
        user = session.get(User, user_id)
        if user is None or not user.active:
            st.session_state.pop(USER_KEY, None)
            return None
        return CurrentUser(user.id, user.name, user.role)


def log_in(user_id: int) -> None:
    st.session_state[USER_KEY] = user_id


def log_out() -> None:
    st.session_state.clear()


def require_user() -> CurrentUser:
    user = current_user()
    if user is None:
        st.error("Please log in.")
        st.stop()
    return user


def require_lead() -> CurrentUser:
    """The page's first line on every lead page: annotators get a refusal, nothing else."""
    user = require_user()
    if not user.is_lead:
        st.error("This page is for leads.")
        st.stop()
    return user
