"""Re-exported so that training code need not know the error lives in `db`; and how a
library's exception is quoted inside our one-sentence messages."""

from db.errors import UserError

__all__ = ["UserError", "first_line"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type): enough to name the cause
    without pasting a library's multi-line explanation into a one-sentence error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
