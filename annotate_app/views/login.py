"""Log in with name and password."""

from __future__ import annotations

import streamlit as st

from annotate_app.state import log_in, sessions
from db.auth import LoginRefused, authenticate

st.title("prefloop")
with st.form("login"):
    name = st.text_input("Name")
    password = st.text_input("Password", type="password")
    submitted = st.form_submit_button("Log in")
if submitted:
    # authenticate runs its own transactions: failed attempts are counted either way.
    try:
        user = authenticate(sessions(), name, password)
    except LoginRefused as refused:
        st.error(str(refused))
    else:
        log_in(user.id)
        st.rerun()
