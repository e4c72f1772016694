"""Riding out a database that is briefly unreachable (a restart, a failover, a lock).

A training run takes minutes to hours; losing it because PostgreSQL restarted while the
run wanted to write one progress row would be a poor trade. Writes that can wait are
retried with growing pauses; if the database stays away, the last error goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")

# About a minute in all: 1 + 2 + 4 + 8 + 16 + 30 seconds between 7 attempts.
PAUSES = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)


def _is_connection_trouble(error: Exception) -> bool:
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def with_retries(action: Callable[[], T], what: str, pauses: tuple[float, ...] = PAUSES) -> T:
    """`action()`, tried again after each pause while the database cannot be reached."""
    for pause in (*pauses, None):
        try:
            return action()
        except (OperationalError, DBAPIError) as error:
            if pause is None or not _is_connection_trouble(error):
                raise
            reason = str(error.orig or error).strip().splitlines()[0]
            print(
                f"warning: the database is unreachable while {what} ({reason}); "
                f"trying again in {pause:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(pause)
    raise AssertionError("unreachable")
