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
    # Committed whether or not the password matched: failed attempts are counted.
    with sessions()() as session:
        try:
            user = authenticate(session, name, password)
            user_id = user.id
            session.commit()
        except LoginRefused as refused:
            session.commit()
            st.error(str(refused))
        else:
            log_in(user_id)
            st.rerun()
