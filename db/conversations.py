"""Conversations as prompts: the rules a list of messages follows, its readable rendering
and its content hash.

A conversation is a list of {"role", "content"} messages: at most one system message and
only first, then user and assistant turns alternating, starting and ending with a user
turn (the turn the policy answers). It is stored once by `conversation_hash`, which
never equals a plain prompt's hash: it hashes a NUL-separated tag before the canonical
JSON, and a stored text never holds a NUL (db.text.storable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from db.errors import UserError
from db.text import storable

ROLES = ("system", "user", "assistant")
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
# Limits that keep one line of a file from becoming a prompt no policy or annotator can
# take in; a longer history is cut before import, not inside the tool.
MAX_MESSAGES = 100
MAX_CHARACTERS = 200_000
_HASH_TAG = "conversation\0"

Message = dict[str, str]


def check_messages(value: Any, where: str) -> list[Message]:
    """`value` as a valid conversation (contents with NULs removed), or a UserError.

    `where` names the place in the user's file ("p.jsonl line 3"); the error says what
    is wrong there and how to fix it, in one sentence.
    """
    example = '[{"role": "user", "content": "..."}]'
    if not isinstance(value, list) or not value:
        raise UserError(
            f"{where} has 'messages' that is not a non-empty list; write a list like {example}."
        )
    if len(value) > MAX_MESSAGES:
        raise UserError(
            f"{where} has {len(value)} messages, more than the {MAX_MESSAGES} a conversation "
            "may hold; keep its last turns only."
        )
    messages: list[Message] = []
    for number, message in enumerate(value, start=1):
        at = f"{where} message {number}"
        # Other keys (a name, tool fields) are dropped: the tool keeps role and content.
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise UserError(
                f"{at} is not an object with the keys role and content; write it as "
                '{"role": "user", "content": "..."}.'
            )
        role, content = message["role"], message["content"]
        if role not in ROLES:
            shown = repr(role) if len(repr(role)) <= 40 else repr(role)[:37] + "..."
            raise UserError(f"{at} has the role {shown}; use system, user or assistant.")
        if not isinstance(content, str) or not storable(content).strip():
            raise UserError(f"{at} ({role}) has no text content; give it text or remove it.")
        messages.append({"role": role, "content": storable(content)})
    _check_order(messages, where)
    total = sum(len(message["content"]) for message in messages)
    if total > MAX_CHARACTERS:
        raise UserError(
            f"{where} holds {total} characters of messages, more than {MAX_CHARACTERS}; "
            "shorten the conversation or keep its last turns only."
        )
    return messages


def _check_order(messages: list[Message], where: str) -> None:
    first = 1 if messages[0]["role"] == "system" else 0
    if first == len(messages):
        raise UserError(f"{where} has only a system message; add the user turn it is to answer.")
    for index in range(first, len(messages)):
        role = messages[index]["role"]
        expected = "user" if (index - first) % 2 == 0 else "assistant"
        if role == expected:
            continue
        if role == "system":
            raise UserError(
                f"{where} message {index + 1} is a second system message or one after the "
                "first turn; keep one system message, first."
            )
        article = {"user": "a", "assistant": "an"}
        raise UserError(
            f"{where} message {index + 1} is {article[role]} {role} turn where "
            f"{article[expected]} {expected} turn belongs; "
            "let user and assistant turns alternate, starting with user."
        )
    if messages[-1]["role"] != "user":
        raise UserError(
            f"{where} ends with an assistant turn; end it with the user turn the policy is "
            "to answer (drop the last answer, or put it in a preference file's chosen)."
        )


def is_single_question(messages: Sequence[Message]) -> bool:
    """One user turn and nothing else: the same prompt as that turn's text with chat."""
    return len(messages) == 1 and messages[0]["role"] == "user"


def conversation_text(messages: Sequence[Message]) -> str:
    """A readable rendering ("User: ...", blank line, "Assistant: ..."), stored as the
    prompt's text so that every path that reads text (reward scoring, reports, the raw
    views) sees the whole conversation."""
    return "\n\n".join(
        f"{ROLE_LABELS[message['role']]}: {message['content']}" for message in messages
    )


def plain_text_prompt(messages: Sequence[Message]) -> str:
    """What a policy without a chat template is given: the rendering, then an open
    "Assistant:" line for it to continue."""
    return f"{conversation_text(messages)}\n\n{ROLE_LABELS['assistant']}:"


def conversation_hash(messages: Sequence[Message]) -> str:
    """sha256 of a tag and the canonical JSON of the messages (key order and spacing
    fixed), so the same conversation from two files is one row."""
    canonical = json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256((_HASH_TAG + canonical).encode("utf-8")).hexdigest()
