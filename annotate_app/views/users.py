"""Lead page: add users, deactivate them, reset passwords."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotate_app.state import require_lead, sessions, write
from db.errors import UserError
from db.users import create_user, list_users, reset_password, set_active

require_lead()
st.title("Users")


def _apply(action, *args, success: str) -> None:
    try:
        with write() as session:
            action(session, *args)
    except UserError as error:
        st.error(str(error))
    else:
        st.success(success)


with sessions()() as session:
    users = [(u.id, u.name, u.role, u.active, u.locked_until) for u in list_users(session)]
st.dataframe(
    pd.DataFrame(
        [
            {"name": name, "role": role, "active": active, "locked until": locked}
            for _id, name, role, active, locked in users
        ]
    ),
    hide_index=True,
)

with st.form("add_user", clear_on_submit=True):
    st.markdown("**Add a user**")
    name = st.text_input("Name", key="new_name")
    role = st.selectbox("Role", ["annotator", "lead"], key="new_role")
    password = st.text_input("Password (at least 8 characters)", type="password", key="new_pw")
    if st.form_submit_button("Add user"):
        _apply(create_user, name, role, password, success=f"Added {role} {name!r}.")

st.markdown("**Change a user**")
by_name = {name: (user_id, active) for user_id, name, _role, active, _locked in users}
chosen = st.selectbox("User", list(by_name), key="change_user")
if chosen:
    user_id, active = by_name[chosen]
    if st.button("Deactivate" if active else "Reactivate", key="toggle_active"):
        _apply(
            set_active,
            user_id,
            not active,
            success=f"{chosen} is {'deactivated' if active else 'active'}.",
        )
        st.rerun()
    with st.form("reset_password", clear_on_submit=True):
        new_password = st.text_input("New password", type="password", key="reset_pw")
        if st.form_submit_button("Reset password"):
            _apply(reset_password, user_id, new_password, success=f"Password of {chosen} reset.")
