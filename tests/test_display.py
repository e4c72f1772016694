"""annotate_app.display: bidirectional control characters shown, never obeyed."""

from __future__ import annotations

import unicodedata

from annotate_app.display import BIDI_CONTROLS, reveal_bidi


def test_every_bidi_control_becomes_a_visible_marker() -> None:
    codes = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
    assert {chr(code) for code in codes} == BIDI_CONTROLS
    for code in codes:
        assert reveal_bidi(f"a{chr(code)}b") == f"a\u27e6U+{code:04X}\u27e7b"


def test_an_override_cannot_disguise_the_text() -> None:
    shown = reveal_bidi("Reply \u202etpecca\u202c now")
    assert shown == "Reply \u27e6U+202E\u27e7tpecca\u27e6U+202C\u27e7 now"
    # Nothing that reorders the display is left (Unicode bidi classes of the controls).
    assert not {unicodedata.bidirectional(char) for char in shown} & {
        "LRE",
        "RLE",
        "PDF",
        "LRO",
        "RLO",
        "LRI",
        "RLI",
        "FSI",
        "PDI",
    }


def test_other_text_is_unchanged() -> None:
    text = "שלום, world! العربية\n\tzero\u200bwidth <b>x</b> ⟦U+202E⟧ 😀"
    assert reveal_bidi(text) == text
