"""A database that does not answer: one sentence on the page, and a retry by itself.

Every page reads the database, so an outage (PostgreSQL restarting, a failover, a
network cut) would otherwise end each run in a long stack trace. app.py catches it around
the whole run, and the server's script-error hook (annotate_app/asgi.py) catches it in
fragments and widget callbacks, which run outside app.py's try.
"""

from __future__ import annotations

import sys
import time

import streamlit as st
from sqlalchemy.exc import DBAPIError, OperationalError

MESSAGE = "The database is not answering; retrying every few seconds."
# Where nothing reruns by itself (a widget callback, a fragment that does not refresh).
MESSAGE_NO_RETRY = "The database is not answering; try again in a moment."
RETRY_SECONDS = 2.0


def is_outage(error: BaseException) -> bool:
    """True for a failure to reach the database, not for a wrong query or data."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def _log(error: BaseException) -> None:
    orig = getattr(error, "orig", None)
    reason = (str(orig or error).strip().splitlines() or [type(error).__name__])[0]
    print(f"warning: the database is not answering ({reason})", file=sys.stderr, flush=True)


def show_and_retry(error: BaseException) -> None:
    """Show the sentence, wait a moment, and run the page again (raises st.rerun's
    exception: call it last)."""
    _log(error)
    st.warning(MESSAGE)
    time.sleep(RETRY_SECONDS)
    st.rerun()


def on_script_error(error: Exception) -> bool:
    """The server's hook for errors the app's own try does not see (a fragment's
    redraw, a widget callback): a sentence instead of the trace. A fragment that
    refreshes by itself tries again at its next redraw, anything else at the next click,
    so the sentence does not promise a retry."""
    if not is_outage(error):
        return False
    _log(error)
    st.warning(MESSAGE_NO_RETRY)
    return True
