"""The annotate page's keys and buttons, collected in the browser (pair_keys.js).

A Streamlit button shortcut makes every key press a rerun of its own, and keys pressed
while a rerun is in flight were lost or applied out of order: `2`, `W`, `Enter` typed
fast stored the choice without its strength. Here a small script keeps the selection in
the browser and sends it to Python as one state value that also holds every submit or
undo not yet acknowledged, each tagged with the screen (`view`) it was made on. The
page reads the selection to highlight its buttons and carries out each command once,
in the order it was made. A ranking task's order (groups of response numbers, best
first, ties in one group) is built the same way, by `rank_N`, `rank_tie` and `rank_back`
actions, and travels with each submit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

_JS = (Path(__file__).resolve().parent / "pair_keys.js").read_text(encoding="utf-8")
_component = st.components.v2.component("prefloop_pair_keys", js=_JS, isolate_styles=False)


@dataclass(frozen=True)
class Command:
    """A submit or undo made in the browser, with the selection it was made with."""

    seq: int
    kind: str  # "submit" | "undo"
    view: str
    choice: str | None
    strength: int | None
    order: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class ClientState:
    view: str | None
    choice: str | None
    strength: int | None
    commands: tuple[Command, ...]
    order: tuple[tuple[int, ...], ...] = ()
    tie: bool = False  # the next response placed ties with the last one


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strength(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _order(value: Any) -> tuple[tuple[int, ...], ...]:
    """A ranking order as sent, keeping only well-formed groups of response numbers."""
    if not isinstance(value, list):
        return ()
    groups = (
        tuple(n for n in group if isinstance(n, int) and not isinstance(n, bool))
        for group in value
        if isinstance(group, list)
    )
    return tuple(group for group in groups if group)


def client_state(widget_key: str) -> ClientState:
    """What the browser last sent; empty before the first key or click."""
    raw = (st.session_state.get(widget_key) or {}).get("client")
    if not isinstance(raw, dict):
        return ClientState(None, None, None, ())
    commands = tuple(
        Command(
            seq=int(item["seq"]),
            kind=str(item["kind"]),
            view=str(item.get("view")),
            choice=_text(item.get("choice")),
            strength=_strength(item.get("strength")),
            order=_order(item.get("order")),
        )
        for item in raw.get("outbox") or []
        if isinstance(item, dict) and isinstance(item.get("seq"), int)
    )
    return ClientState(
        _text(raw.get("view")),
        _text(raw.get("choice")),
        _strength(raw.get("strength")),
        commands,
        _order(raw.get("order")),
        raw.get("tie") is True,
    )


def pair_keys(
    widget_key: str,
    *,
    view: str,
    acked: int,
    has_pair: bool,
    keys: dict[str, str],
) -> None:
    """Mount the key handler for one screen of the annotate page.

    `keys` maps a key (as KeyboardEvent.key, lower case) to an action, which is also the
    widget key of the button that does the same: `choice_<value>`, `strength_<n>`,
    `rank_<n>`, `rank_tie`, `rank_back`, `submit` or `undo`. `acked` is the seq of the
    last command carried out, so the browser stops resending it. The page reads what was
    sent with `client_state`.
    """
    _component(
        key=widget_key,
        data={
            "view": view,
            "acked": acked,
            "pair": view if has_pair else None,
            "keys": keys,
            "buttons": sorted(set(keys.values())),
        },
        height=0,
        # Declares the state key "client" (a component keeps only declared ones); the
        # page reads it itself, before it draws anything.
        on_client_change=_ignore,
    )


def _ignore() -> None:
    pass
