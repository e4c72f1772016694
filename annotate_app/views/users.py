"""Lead page: add users, deactivate them, reset passwords.

Names are typed by leads: shown in table cells and select boxes (text), and through
`literal` in the alerts that quote them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotate_app.plain import literal
from annotate_app.state import require_lead, sessions, write
from db.errors import UserError
from db.models import utcnow
from db.users import create_user, list_users, reset_password, set_active

NOTICE_KEY = "users_notice"

require_lead()
st.title("Users")


def _apply(action, *args, success: str) -> None:
    try:
        with write() as session:
            action(session, *args)
    except UserError as error:
        st.error(literal(str(error)))
    else:
        st.success(literal(success))


def _add_user() -> None:
    """The add form's submit, run before the page: on success the form is emptied, on a
    refusal the name and role stay as typed (only the password is asked again)."""
    name = st.session_state.get("new_name", "")
    role = st.session_state.get("new_role", "annotator")
    password = st.session_state.get("new_pw", "")
    st.session_state["new_pw"] = ""
    try:
        with write() as session:
            create_user(session, name, role, password)
    except UserError as error:
        st.session_state[NOTICE_KEY] = ("error", str(error))
    else:
        st.session_state["new_name"] = ""
        st.session_state[NOTICE_KEY] = ("success", f"Added {role} {name!r}.")


with sessions()() as session:
    users = [(u.id, u.name, u.role, u.active, u.locked_until) for u in list_users(session)]
now = utcnow()
st.dataframe(
    pd.DataFrame(
        [
            {
                "name": name,
                "role": role,
                "active": active,
                # A lock that has run out is no lock: the next login is let through.
                "locked until": locked if locked is not None and locked > now else None,
            }
            for _id, name, role, active, locked in users
        ]
    ),
    hide_index=True,
)

with st.form("add_user"):
    st.markdown("**Add a user**")
    st.text_input("Name", key="new_name")
    st.selectbox("Role", ["annotator", "lead"], key="new_role")
    st.text_input("Password (at least 8 characters)", type="password", key="new_pw")
    st.form_submit_button("Add user", on_click=_add_user)
notice = st.session_state.pop(NOTICE_KEY, None)
if notice is not None:
    kind, text = notice
    (st.error if kind == "error" else st.success)(literal(text))

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
