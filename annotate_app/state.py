"""What every page shares: the database, the logged-in user, and the role checks.

A login is a token (db.login_tokens) kept in Streamlit's per-browser-session state and
in an HttpOnly cookie (set by our server: annotate_app/login_cookie.py), so that a reload
or a new tab of the same browser stays logged in. Every run
looks the token up again, so a logout elsewhere, a password reset, a deactivated account
or a changed role takes effect at once, and lead pages refuse annotators on the server
side.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from annotate_app import login_cookie
from db.engine import make_engine, session_factory, transaction
from db.login_tokens import issue_token, revoke_token, user_for_token

TOKEN_KEY = "login_token"
# Set once this browser session has looked at the cookie it arrived with.
COOKIE_READ_KEY = "login_cookie_read"
# A change to the cookie, made by the next run of the app (see draw_cookie_change), and
# the one-time code that the page was given for it.
COOKIE_CHANGE_KEY = "login_cookie_change"
COOKIE_CODE_KEY = "login_cookie_code"
LOGIN_COOKIE = login_cookie.COOKIE


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


def _token() -> str | None:
    token = st.session_state.get(TOKEN_KEY)
    if token is None and not st.session_state.get(COOKIE_READ_KEY):
        # The cookie of the page's first request: only a new session reads it, since a
        # logout in this session ends that very token in the database.
        st.session_state[COOKIE_READ_KEY] = True
        token = st.context.cookies.get(LOGIN_COOKIE)
        if token is not None:
            # Kept before the database is asked: if it does not answer, the next run
            # asks again instead of forgetting the cookie it was read from.
            st.session_state[TOKEN_KEY] = token
    return token


def current_user() -> CurrentUser | None:
    token = _token()
    if token is None:
        return None
    with sessions()() as session:
        user = user_for_token(session, token)
        if user is None:
            st.session_state.pop(TOKEN_KEY, None)
            st.session_state.pop(COOKIE_CODE_KEY, None)
            st.session_state[COOKIE_CHANGE_KEY] = None
            return None
        st.session_state[TOKEN_KEY] = token
        return CurrentUser(user.id, user.name, user.role)


def log_in(user_id: int) -> None:
    """Log `user_id` in, in this session and, through the cookie, in this browser."""
    with write() as session:
        token = issue_token(session, user_id)
    st.session_state[TOKEN_KEY] = token
    st.session_state.pop(COOKIE_CODE_KEY, None)
    st.session_state[COOKIE_CHANGE_KEY] = token


def log_out() -> None:
    token = st.session_state.get(TOKEN_KEY)
    if token is not None:
        with write() as session:
            revoke_token(session, token)
    st.session_state.clear()
    st.session_state[COOKIE_READ_KEY] = True
    st.session_state[COOKIE_CHANGE_KEY] = None


def draw_cookie_change() -> None:
    """Store or remove the login cookie in the browser, if a login or logout asked to.

    Python cannot set a cookie on Streamlit's connection, and a cookie that a page
    script writes cannot be HttpOnly. So the page gets a one-time code, never the token:
    a line of script posts it to our endpoint, whose answer sets or removes the cookie
    (HttpOnly, SameSite=Strict, lasting as long as the token, Secure over HTTPS).
    """
    if COOKIE_CHANGE_KEY not in st.session_state:
        return
    code = st.session_state.get(COOKIE_CODE_KEY)
    if code is not None and login_cookie.was_redeemed(code):
        del st.session_state[COOKIE_CHANGE_KEY], st.session_state[COOKIE_CODE_KEY]
        return
    # Offered again on every run until the server has seen it: a run that follows at
    # once can replace the page before its script ran.
    if code is None or not login_cookie.is_live(code):
        code = login_cookie.new_code(st.session_state[COOKIE_CHANGE_KEY])
        st.session_state[COOKIE_CODE_KEY] = code
    st.html(f"<script>{login_cookie.page_script(code)}</script>", unsafe_allow_javascript=True)


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
