"""The prompt above the responses: a plain text in its box, or a conversation as turns
with role labels, the last few shown and the earlier ones in an expander.

Every turn is untrusted text (a user's file, a model's earlier answer): it is drawn as
the round draws responses (response_box.show_text: st.text, or the safe Markdown of a
markdown round), never with st.markdown or HTML of its own. The role labels are ours.
"""

from __future__ import annotations

import streamlit as st

from annotate_app.display import reveal_bidi
from annotate_app.response_box import show_text
from annotate_app.state import sessions
from db.conversations import ROLE_LABELS, Message
from db.prompts import pair_messages

# The turns shown without opening anything: the question and the exchange before it.
SHOWN_TURNS = 3
# The conversation scrolls inside its box, as the prompt box does, so that a long history
# never pushes the responses and buttons off the screen.
CONVERSATION_STYLE = """
<style>
.st-key-conversation { max-height: 34vh; overflow-y: auto; }
.st-key-conversation [class*="st-key-turn_"] { margin-bottom: 0.25rem; }
</style>
"""


def show_pair_prompt(pair_id: int, text: str, mode: str) -> None:
    """The prompt of the pair (or ranking task) `pair_id` whose prompt text is `text`.
    Its messages are read once per pair and kept in the session: a page redraws on every
    click, and a prompt never changes."""
    cached = st.session_state.get("conversation")
    if cached is None or cached[0] != pair_id:
        with sessions()() as session:
            cached = (pair_id, pair_messages(session, pair_id))
        st.session_state.conversation = cached
    show_prompt(text, cached[1], mode)


def show_prompt(text: str, messages: list[Message] | None, mode: str) -> None:
    """The prompt section of the annotate page. `messages` None: the plain `text` as
    always (st.text, in the box keyed "prompt"); otherwise the conversation in the box
    keyed "conversation", turn i in a box keyed f"turn_{i}" (from 1)."""
    if not messages:
        st.markdown("**Prompt**")
        with st.container(border=True, key="prompt"):
            st.text(reveal_bidi(text))
        return
    st.html(CONVERSATION_STYLE)
    st.markdown(f"**Conversation** ({len(messages)} messages; the responses answer the last)")
    with st.container(border=True, key="conversation"):
        hidden = max(len(messages) - SHOWN_TURNS, 0)
        if hidden:
            with st.expander(f"{hidden} earlier messages", expanded=False):
                for number in range(1, hidden + 1):
                    _turn(number, messages[number - 1], mode)
        for number in range(hidden + 1, len(messages) + 1):
            _turn(number, messages[number - 1], mode)


def _turn(number: int, message: Message, mode: str) -> None:
    with st.container(border=True, key=f"turn_{number}"):
        st.markdown(f"**{ROLE_LABELS.get(message['role'], 'Message')}**")
        show_text(message["content"], mode)
