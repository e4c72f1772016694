"""Text as the database can hold it."""

NUL = "\x00"


def storable(text: str) -> str:
    """`text` without NUL characters, which PostgreSQL text columns reject.

    Model outputs are arbitrary text and byte-level tokenizers can produce a NUL; it
    carries nothing an annotator could see, so it is dropped rather than failing the
    whole batch on PostgreSQL and passing on SQLite.
    """
    return text.replace(NUL, "") if NUL in text else text
