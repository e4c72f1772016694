"""The annotate page's ranking task: K responses (3 to 6) numbered in the order the lease
drew (db.ranking), ordered best to worst by keys or clicks, submitted as one judgment.

Keys (pair_keys.js keeps the order in the browser, so fast typing loses nothing): the
response numbers in order of preference; `=` makes the next number tie with the last
one placed; Backspace takes the last placement back; S chooses skip; Enter submits; U
undoes the last judgment. The same actions are buttons. An incomplete order is refused
with one sentence and nothing is stored. Responses are drawn by show_response (text or
safe Markdown, never st.markdown on model output).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from annotate_app.pair_keys import ClientState, Command
from annotate_app.response_box import show_response
from db.judgments import Assignment

FLAGS = {"unsafe": "Unsafe", "broken": "Broken", "off_topic": "Off-topic"}
MAX_K = 6
TIE_KEY, BACK_KEY, SKIP_KEY = "=", "Backspace", "S"
# The bounded, scrolling response boxes (their keys are response_1 .. response_K).
STYLE = """
<style>
[class*="st-key-response_"] { max-height: 34vh; overflow-y: auto; }
</style>
"""


def shortcuts(k: int) -> dict[str, str]:
    """Key (KeyboardEvent.key, lower case) -> action, for a task of k responses."""
    return {
        **{str(n): f"rank_{n}" for n in range(1, k + 1)},
        TIE_KEY: "rank_tie",
        BACK_KEY.lower(): "rank_back",
        SKIP_KEY.lower(): "choice_skip",
        "enter": "submit",
        "u": "undo",
    }


def flag_key(number: int, flag: str) -> str:
    return f"rank_flag_{number}_{flag}"


def reset_flags() -> None:
    """Unset every response's flags (set, not removed: see annotate._reset_pair)."""
    for number in range(1, MAX_K + 1):
        for flag in FLAGS:
            st.session_state[flag_key(number, flag)] = False


def order_text(order: tuple[tuple[int, ...], ...]) -> str:
    """The order as the page shows it: 3 > 1 = 4 > 2 (ties joined by =)."""
    return " > ".join(" = ".join(str(n) for n in group) for group in order)


def stored_ranking(
    order: tuple[tuple[int, ...], ...], responses: tuple[tuple[int, str], ...]
) -> list[list[int]] | None:
    """The order as sample ids (db.ranking's form), or None unless it places every
    response shown exactly once."""
    numbers = [n for group in order for n in group]
    if sorted(numbers) != list(range(1, len(responses) + 1)):
        return None
    return [[responses[n - 1][0] for n in group] for group in order]


def judgment(assignment: Assignment, command: Command, rationale: str, ms_spent: int) -> Any:
    """submit_judgment's keywords for this submit, or the sentence saying why not."""
    shown = [sample for sample, _text in assignment.responses]
    flags = {
        flag: [
            shown[n - 1]
            for n in range(1, len(shown) + 1)
            if st.session_state.get(flag_key(n, flag))
        ]
        for flag in FLAGS
    }
    common = dict(
        left_sample="A",
        display_order=shown,
        rationale=rationale,
        flags={flag: ids for flag, ids in flags.items() if ids},
        ms_spent=ms_spent,
    )
    if command.choice == "skip":
        return dict(choice="skip", **common)
    ranking = stored_ranking(command.order, assignment.responses)
    if ranking is None:
        placed = sum(len(group) for group in command.order)
        return (
            f"Place all {len(shown)} responses before submitting ({placed} placed so far): "
            "press their numbers from best to worst, = before a number to tie it."
        )
    return dict(choice="ranking", ranking=ranking, **common)


def _label(label: str, key: str) -> str:
    return f"{label} `{key}`"


def draw(assignment: Assignment, selection: ClientState | None, mode: str) -> None:
    """The K numbered responses with their flags, the order so far and the buttons."""
    st.html(STYLE)
    k = len(assignment.responses)
    per_row = 2 if k == 4 else 3
    order = selection.order if selection else ()
    placed = {n for group in order for n in group}
    for start in range(0, k, per_row):
        columns = st.columns(per_row)
        for column, number in zip(
            columns, range(start + 1, min(k, start + per_row) + 1), strict=False
        ):
            text = assignment.responses[number - 1][1]
            show_response(column, f"Response {number}", text, mode, f"response_{number}")
            for flag_column, (flag, label) in zip(
                column.columns(len(FLAGS)), FLAGS.items(), strict=True
            ):
                flag_column.checkbox(label, key=flag_key(number, flag))
    with st.container(key="rank_order"):
        tie = " (the next one ties with the last)" if selection and selection.tie else ""
        shown = f"`{order_text(order)}`" if order else "nothing placed yet"
        st.markdown(f"**Your order, best first:** {shown} — {len(placed)} of {k} placed{tie}")
    buttons = st.columns(k + 2)
    for column, number in zip(buttons[:k], range(1, k + 1), strict=True):
        column.button(
            _label(f"#{number}", str(number)),
            key=f"rank_{number}",
            type="primary" if number in placed else "secondary",
            width="stretch",
        )
    buttons[k].button(_label("Tie", TIE_KEY), key="rank_tie", width="stretch")
    buttons[k + 1].button(_label("Back", "⌫"), key="rank_back", width="stretch")
    st.text_area("Rationale (optional)", key="rationale", height=68)
    skip, submit, undo = st.columns(3)
    skip.button(
        _label("Skip", SKIP_KEY),
        key="choice_skip",
        type="primary" if selection and selection.choice == "skip" else "secondary",
        width="stretch",
    )
    submit.button(_label("Submit", "Enter"), key="submit", type="primary", width="stretch")
    undo.button(_label("Undo my last judgment", "U"), key="undo", width="stretch")
    st.caption(
        f"Keys: press the response numbers 1 to {k} from best to worst; = then a number "
        "ties it with the last one placed; Backspace takes the last one back; S skips; "
        "Enter submits; U undoes your last judgment. Clicks on the buttons do the same. "
        "Keys typed in the rationale are text."
    )
