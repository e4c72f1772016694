"""Re-exported so that training code need not know the error lives in `db`."""

from db.errors import UserError

__all__ = ["UserError"]
