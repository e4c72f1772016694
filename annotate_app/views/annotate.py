"""The annotate page: a prompt, two responses side by side in random order, a choice.

Responses are model output and untrusted: they are rendered with st.text, which shows
them as plain text (line breaks kept) and never as HTML or Markdown.
"""

from __future__ import annotations

import random
import time

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from annotate_app.state import require_user, sessions, write
from db.judgments import PairUnavailable, next_pair, progress, record_judgment, undo_last

CHOICES = {  # key -> (button label, shortcut)
    "left": ("Left is better", "1"),
    "right": ("Right is better", "2"),
    "tie": ("Tie", "3"),
    "both_bad": ("Both bad", "4"),
    "skip": ("Skip", "5"),
}
STRENGTHS = {1: ("Slightly", "Q"), 2: ("Clearly", "W"), 3: ("Much better", "E")}
FLAGS = {"unsafe": "Unsafe", "broken": "Broken", "off_topic": "Off-topic"}


def _reset_pair() -> None:
    for key in ("assignment", "left", "shown_at", "choice", "strength"):
        st.session_state.pop(key, None)
    # Widget values are set, not removed: a removed key is sent back by the browser with
    # its old value, and the next pair would inherit the flags and rationale.
    for flag in FLAGS:
        st.session_state[f"flag_{flag}"] = False
    st.session_state.rationale = ""


def _load_pair(user_id: int) -> None:
    if st.session_state.get("assignment") is not None:
        return
    with write() as session:
        assignment = next_pair(session, user_id)
    st.session_state.assignment = assignment
    # Which stored sample is shown on the left, drawn per judgment and stored with it.
    st.session_state.left = random.choice("AB")
    st.session_state.shown_at = time.monotonic()


def _stored_choice(choice: str, left: str) -> str:
    """The choice in terms of the stored pair (A/B), undoing the left/right shuffle."""
    if choice == "left":
        return left
    if choice == "right":
        return "B" if left == "A" else "A"
    return choice


def _submit(user_id: int) -> None:
    assignment, choice = st.session_state.get("assignment"), st.session_state.get("choice")
    if assignment is None or choice is None:
        st.session_state.notice = ("warning", "Choose an answer first (keys 1 to 5).")
        return
    left = st.session_state.left
    try:
        with write() as session:
            record_judgment(
                session,
                user_id,
                assignment.pair_id,
                choice=_stored_choice(choice, left),
                left_sample=left,
                strength=st.session_state.get("strength") if choice in ("left", "right") else None,
                rationale=st.session_state.get("rationale", "").strip(),
                flags={flag: True for flag in FLAGS if st.session_state.get(f"flag_{flag}")},
                ms_spent=int((time.monotonic() - st.session_state.shown_at) * 1000),
            )
    except PairUnavailable as unavailable:
        st.session_state.notice = ("info", str(unavailable))
    _reset_pair()


def _undo(user_id: int) -> None:
    with write() as session:
        pair_id = undo_last(session, user_id)
    _reset_pair()
    st.session_state.notice = (
        ("info", "Your last judgment was removed; judge that pair again.")
        if pair_id is not None
        else ("warning", "There is no judgment of yours to undo in an open round.")
    )


def _select(state_key: str, value: object) -> None:
    st.session_state[state_key] = value


def _button_row(columns: list[DeltaGenerator], options: dict, state_key: str) -> None:
    """One button per option, with its shortcut; the selected one is highlighted and
    stored in st.session_state[state_key]. Button keys are f"{state_key}_{option}"."""
    selected = st.session_state.get(state_key)
    for column, (value, (label, shortcut)) in zip(columns, options.items(), strict=True):
        column.button(
            label,
            key=f"{state_key}_{value}",
            on_click=_select,
            args=(state_key, value),
            shortcut=shortcut,
            type="primary" if selected == value else "secondary",
            width="stretch",
        )


def _progress(user_id: int) -> None:
    with sessions()() as session:
        done = progress(session, user_id)
    left, right = st.columns([1, 3])
    left.metric("My judgments today", done.mine_today)
    if done.round_number is not None:
        right.progress(
            done.fraction,
            text=f"Round {done.round_number}: {done.round_done} of {done.round_total} judgments",
        )


def _response(column: DeltaGenerator, title: str, text: str, key: str) -> None:
    with column.container(border=True, key=key):
        st.markdown(f"**{title}**")
        st.text(text)


def render() -> None:
    user = require_user()
    st.title("Annotate")
    _load_pair(user.id)
    notice = st.session_state.pop("notice", None)
    if notice is not None:
        getattr(st, notice[0])(notice[1])
    _progress(user.id)
    assignment = st.session_state.assignment
    if assignment is None:
        st.success("Nothing left to judge right now. Thank you!")
        st.button("Undo my last judgment", on_click=_undo, args=(user.id,), shortcut="U")
        if st.button("Check again"):
            _reset_pair()
            st.rerun()
        return
    if assignment.guidelines.strip():
        with st.expander(f"Guidelines for round {assignment.round_number}"):
            st.markdown(assignment.guidelines)
    st.markdown("**Prompt**")
    with st.container(border=True, key="prompt"):
        st.text(assignment.prompt)
    left_text, right_text = (
        (assignment.text_a, assignment.text_b)
        if st.session_state.left == "A"
        else (assignment.text_b, assignment.text_a)
    )
    left_column, right_column = st.columns(2)
    _response(left_column, "Left", left_text, "left_response")
    _response(right_column, "Right", right_text, "right_response")

    _button_row(st.columns(len(CHOICES)), CHOICES, "choice")
    strength_columns = st.columns(len(STRENGTHS) + 1)
    strength_columns[0].caption("How much better (optional):")
    _button_row(strength_columns[1:], STRENGTHS, "strength")
    flag_columns = st.columns(len(FLAGS))
    for column, (flag, label) in zip(flag_columns, FLAGS.items(), strict=True):
        column.checkbox(label, key=f"flag_{flag}")
    st.text_area("Rationale (optional)", key="rationale", height=68)
    submit, undo = st.columns(2)
    submit.button(
        "Submit",
        key="submit",
        on_click=_submit,
        args=(user.id,),
        shortcut="Enter",
        type="primary",
        width="stretch",
    )
    undo.button(
        "Undo my last judgment",
        key="undo",
        on_click=_undo,
        args=(user.id,),
        shortcut="U",
        width="stretch",
    )
    st.caption(
        "Keys: 1 left better, 2 right better, 3 tie, 4 both bad, 5 skip; Q/W/E slightly, "
        "clearly or much better; Enter submits; U undoes your last judgment."
    )


render()
