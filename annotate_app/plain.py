"""Untrusted text inside Streamlit's Markdown elements (st.success, st.error, ...).

Names, notes and error messages that quote them are typed by people; rendered as
Markdown, `![x](http://host/pixel)` in a name would make every browser that shows it
fetch that address. Where a message must be an alert (whose body is always Markdown),
the text goes through `literal` first; everywhere else untrusted text uses st.text or a
table cell.
"""

from __future__ import annotations

import re
import string

_ESCAPED = frozenset(string.punctuation)
# An invisible character that joins words, put where Streamlit's Markdown would turn
# plain text into a link (GFM "autolink literals": http://..., www., name@host), which
# backslash escapes do not prevent.
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)


def literal(text: str) -> str:
    """`text` as Markdown that shows exactly `text`: CommonMark lets every ASCII
    punctuation character be escaped with a backslash, and an escaped one starts no
    link, image, emphasis, code, math or HTML; a word joiner (invisible) stops the
    bare addresses that would still become links."""
    joined = _AUTOLINK.sub(WORD_JOINER, text)
    return "".join(f"\\{char}" if char in _ESCAPED else char for char in joined)
