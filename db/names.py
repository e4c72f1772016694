"""Names people and things are known by (user names, model names, prompt source labels):
one check, so the CLI and the app's forms refuse the same names with the same sentence on
SQLite and PostgreSQL.

A name is shown in tables, logs and the app, and typed at a login prompt: characters that
cannot be seen (controls, zero-width and bidirectional formatting marks, line
separators) would make two names look alike or reorder the text around them.
"""

from __future__ import annotations

import unicodedata

from db.errors import UserError

# Cc: controls (newline, tab, ...); Cf: format marks (zero-width space and joiners,
# bidirectional overrides U+202A-U+202E and isolates U+2066-U+2069, byte-order mark);
# Cs: lone surrogates (undecodable bytes in a command-line argument); Zl, Zp: line and
# paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def invisible_character(text: str) -> str | None:
    """The first character of `text` that cannot be seen, if any."""
    return next((c for c in text if unicodedata.category(c) in _INVISIBLE), None)


def describe_character(character: str) -> str:
    """E.g. 'U+202E (RIGHT-TO-LEFT OVERRIDE)'."""
    name = unicodedata.name(character, "")
    return f"U+{ord(character):04X}" + (f" ({name})" if name else "")


def checked_name(name: str, *, what: str, max_length: int, example: str) -> str:
    """`name` without surrounding whitespace, or a UserError saying what is wrong.

    `what` names the field in the sentence ("user name"); `max_length` is its column's.
    """
    name = name.strip()
    if not name:
        raise UserError(f"The {what} is empty; give a name such as {example!r}.")
    if len(name) > max_length:
        raise UserError(f"The {what} is {len(name)} characters long; use at most {max_length}.")
    bad = invisible_character(name)
    if bad is not None:
        # repr() escapes exactly these characters, so the name is shown as it is.
        raise UserError(
            f"The {what} {name!r} contains the invisible or control character "
            f"{describe_character(bad)}; use visible characters only."
        )
    return name
