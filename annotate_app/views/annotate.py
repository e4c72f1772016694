"""The annotate page: a prompt, two responses side by side in random order, a choice.

Responses are model output and untrusted: they are shown as their round says
(annotate_app/response_box.py), as plain text with st.text (line breaks kept, never HTML
or Markdown) or as Markdown through a fixed allow-list of tags that loads and follows
nothing (annotate_app/markdown_safe.py), with bidirectional control characters made
visible (annotate_app/display.py) in both, in boxes of bounded height so that the
buttons stay on screen however long a response is.

Keys and button clicks are collected in the browser (annotate_app/pair_keys.py): each
submit arrives with the choice and strength it was made with, however fast they were
typed. Which sample is shown on the left comes with the lease (db.judgments), so a
reload, a second tab or an undo shows the pair the same way round. A task of a ranking
round is drawn and submitted by annotate_app/rank_view.py, through the same keys
component.
"""

from __future__ import annotations

import secrets
import time

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from annotate_app import rank_view
from annotate_app.conversation_view import show_pair_prompt
from annotate_app.pair_keys import ClientState, Command, client_state, pair_keys
from annotate_app.response_box import RESPONSE_STYLE, show_response
from annotate_app.state import require_user, sessions, write
from db.judgments import (
    Assignment,
    PairUnavailable,
    fetch_next_pair,
    read_progress,
    submit_judgment,
    undo_last,
)
from db.rounds import render_mode

CHOICES = {  # value -> (button label, key)
    "left": ("Left is better", "1"),
    "right": ("Right is better", "2"),
    "tie": ("Tie", "3"),
    "both_bad": ("Both bad", "4"),
    "skip": ("Skip", "5"),
}
STRENGTHS = {1: ("Slightly", "Q"), 2: ("Clearly", "W"), 3: ("Much better", "E")}
FLAGS = {"unsafe": "Unsafe", "broken": "Broken", "off_topic": "Off-topic"}
SUBMIT_KEY, UNDO_KEY = "Enter", "U"
# Each key's action is the widget key of the button that does the same.
SHORTCUTS = {
    **{key.lower(): f"choice_{value}" for value, (_, key) in CHOICES.items()},
    **{key.lower(): f"strength_{value}" for value, (_, key) in STRENGTHS.items()},
    SUBMIT_KEY.lower(): "submit",
    UNDO_KEY.lower(): "undo",
}
KEYS_WIDGET = "pair_keys"
# A response box scrolls inside itself beyond this height, the prompt box beyond its own.
_BOUNDED_BOXES = f"""
<style>
.st-key-left_response, .st-key-right_response {{ max-height: 42vh; overflow-y: auto; }}
.st-key-prompt {{ max-height: 18vh; overflow-y: auto; }}
{RESPONSE_STYLE}
</style>
"""


def _reset_pair() -> None:
    for key in ("assignment", "left", "render", "shown_at", "view"):
        st.session_state.pop(key, None)
    # Widget values are set, not removed: a removed key is sent back by the browser with
    # its old value, and the next pair would inherit the flags and rationale.
    for flag in FLAGS:
        st.session_state[f"flag_{flag}"] = False
    rank_view.reset_flags()
    st.session_state.rationale = ""


def _load_pair(user_id: int) -> None:
    """Lease the next pair, once per screen: `view` names this showing of it (or of
    "nothing left"), so the browser's keys apply to the screen they were typed on."""
    if "view" in st.session_state:
        return
    assignment = fetch_next_pair(sessions(), user_id)
    render = "text"
    if assignment is not None:  # how this pair's round shows responses
        with sessions()() as session:
            render = render_mode(session, assignment.round_number)
    st.session_state.assignment = assignment
    st.session_state.render = render
    # Which stored sample is shown on the left: the lease's, stored with the judgment.
    st.session_state.left = assignment.left_sample if assignment is not None else None
    st.session_state.shown_at = time.monotonic()
    st.session_state.view = secrets.token_hex(8)


def _stored_choice(choice: str, left: str) -> str:
    """The choice in terms of the stored pair (A/B), undoing the left/right shuffle."""
    if choice == "left":
        return left
    if choice == "right":
        return "B" if left == "A" else "A"
    return choice


def _submit(user_id: int, command: Command) -> None:
    assignment = st.session_state.get("assignment")
    if assignment is None:
        return
    if assignment.kind == "ranking":
        _submit_ranking(user_id, assignment, command)
        return
    if command.choice not in CHOICES:
        st.session_state.notice = ("warning", "Choose an answer first (keys 1 to 5).")
        return
    left = st.session_state.left
    try:
        submit_judgment(
            sessions(),
            user_id,
            assignment.pair_id,
            choice=_stored_choice(command.choice, left),
            left_sample=left,
            strength=command.strength if command.choice in ("left", "right") else None,
            rationale=st.session_state.get("rationale", "").strip(),
            flags={flag: True for flag in FLAGS if st.session_state.get(f"flag_{flag}")},
            ms_spent=int((time.monotonic() - st.session_state.shown_at) * 1000),
        )
    except PairUnavailable as unavailable:
        st.session_state.notice = ("info", str(unavailable))
    _reset_pair()


def _submit_ranking(user_id: int, assignment: Assignment, command: Command) -> None:
    judgment = rank_view.judgment(
        assignment,
        command,
        st.session_state.get("rationale", "").strip(),
        int((time.monotonic() - st.session_state.shown_at) * 1000),
    )
    if isinstance(judgment, str):  # incomplete: say so, store nothing, keep the screen
        st.session_state.notice = ("warning", judgment)
        return
    try:
        submit_judgment(sessions(), user_id, assignment.pair_id, **judgment)
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


def _carry_out(user_id: int) -> None:
    """Carry out, in order and once each, the commands the browser sent.

    In the script rather than in the component's callback: if the database does not
    answer, the app's retry (annotate_app/outage.py) runs this again, and a command is
    acknowledged only once it was carried out.
    """
    for command in client_state(KEYS_WIDGET).commands:
        if command.seq <= st.session_state.get("acked", 0):
            continue
        # The browser waits for each command's answer before it makes the next, so a
        # command for another screen comes only from a page that was replaced meanwhile.
        if command.view == st.session_state.get("view"):
            if command.kind == "submit":
                _submit(user_id, command)
            elif command.kind == "undo":
                _undo(user_id)
        st.session_state.acked = command.seq


def _keys(has_pair: bool) -> None:
    assignment = st.session_state.assignment
    ranking = assignment is not None and assignment.kind == "ranking"
    pair_keys(
        KEYS_WIDGET,
        view=st.session_state.view,
        acked=st.session_state.get("acked", 0),
        has_pair=has_pair,
        keys=rank_view.shortcuts(len(assignment.responses)) if ranking else SHORTCUTS,
    )


def _label(label: str, key: str) -> str:
    # The key as inline code: shown as a key cap, and never read as Markdown itself.
    return f"{label} `{key}`"


def _button_row(
    columns: list[DeltaGenerator], options: dict, prefix: str, selected: object
) -> None:
    """One button per option, with its key; the selected one is highlighted. Button keys
    are f"{prefix}_{option}"; pair_keys.js handles their clicks."""
    for column, (value, (label, key)) in zip(columns, options.items(), strict=True):
        column.button(
            _label(label, key),
            key=f"{prefix}_{value}",
            type="primary" if selected == value else "secondary",
            width="stretch",
        )


def _progress(user_id: int) -> None:
    done = read_progress(sessions(), user_id)
    left, right = st.columns([1, 3])
    left.metric("My judgments today", done.mine_today)
    if done.round_number is not None:
        right.progress(
            done.fraction,
            text=f"Round {done.round_number}: {done.round_done} of {done.round_total} judgments",
        )


def _selection() -> ClientState | None:
    client = client_state(KEYS_WIDGET)
    return client if client.view == st.session_state.view else None


def render() -> None:
    user = require_user()
    _carry_out(user.id)
    _load_pair(user.id)
    # First on the page: it stays mounted from screen to screen, and it learns of a new
    # screen before that screen's buttons are drawn.
    _keys(has_pair=st.session_state.assignment is not None)
    st.title("Annotate")
    notice = st.session_state.pop("notice", None)
    if notice is not None:
        getattr(st, notice[0])(notice[1])
    _progress(user.id)
    assignment = st.session_state.assignment
    if assignment is None:
        st.success("Nothing left to judge right now. Thank you!")
        st.button(_label("Undo my last judgment", UNDO_KEY), key="undo")
        if st.button("Check again"):
            _reset_pair()
            st.rerun()
        return
    st.html(_BOUNDED_BOXES)
    if assignment.guidelines.strip():
        with st.expander(f"Guidelines for round {assignment.round_number}"):
            st.markdown(assignment.guidelines)
    show_pair_prompt(assignment.pair_id, assignment.prompt, st.session_state.render)
    if assignment.kind == "ranking":
        rank_view.draw(assignment, _selection(), st.session_state.render)
        return
    left_text, right_text = (
        (assignment.text_a, assignment.text_b)
        if st.session_state.left == "A"
        else (assignment.text_b, assignment.text_a)
    )
    left_column, right_column = st.columns(2)
    mode = st.session_state.render
    show_response(left_column, "Left", left_text, mode, "left_response")
    show_response(right_column, "Right", right_text, mode, "right_response")

    selection = _selection()
    _button_row(st.columns(len(CHOICES)), CHOICES, "choice", selection and selection.choice)
    strength_columns = st.columns(len(STRENGTHS) + 1)
    strength_columns[0].caption("How much better (optional):")
    _button_row(strength_columns[1:], STRENGTHS, "strength", selection and selection.strength)
    flag_columns = st.columns(len(FLAGS))
    for column, (flag, label) in zip(flag_columns, FLAGS.items(), strict=True):
        column.checkbox(label, key=f"flag_{flag}")
    st.text_area("Rationale (optional)", key="rationale", height=68)
    submit, undo = st.columns(2)
    submit.button(_label("Submit", SUBMIT_KEY), key="submit", type="primary", width="stretch")
    undo.button(_label("Undo my last judgment", UNDO_KEY), key="undo", width="stretch")
    st.caption(
        "Keys: 1 left better, 2 right better, 3 tie, 4 both bad, 5 skip; Q/W/E slightly, "
        "clearly or much better; Enter submits; U undoes your last judgment. Keys typed "
        "in the rationale are text."
    )


render()
