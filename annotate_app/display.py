"""Untrusted text made safe to look at, beyond being plain text.

Bidirectional control characters (a right-to-left override, isolates, marks) are obeyed
by the browser even in plain text, so a response could display something other than
what it holds (an override before "tpecca" shows "accept"). `reveal_bidi` replaces each
with a visible marker naming it; what is stored is never changed, only what is shown.
"""

from __future__ import annotations

BIDI_CONTROLS = frozenset(
    [
        *map(chr, range(0x202A, 0x202F)),  # LRE, RLE, PDF, LRO, RLO
        *map(chr, range(0x2066, 0x206A)),  # LRI, RLI, FSI, PDI
        "\u200e",  # left-to-right mark
        "\u200f",  # right-to-left mark
        "\u061c",  # Arabic letter mark
    ]
)
_MARKERS = {ord(char): f"\u27e6U+{ord(char):04X}\u27e7" for char in BIDI_CONTROLS}


def reveal_bidi(text: str) -> str:
    """`text` with every bidirectional control character shown as ⟦U+XXXX⟧."""
    return text.translate(_MARKERS)
