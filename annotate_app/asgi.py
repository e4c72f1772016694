"""The server `rlhf serve` runs: Streamlit's app (app.py) plus our one endpoint, which
sets and removes the HttpOnly login cookie (annotate_app/login_cookie.py).

`streamlit run` finds the `app` below and serves it with Streamlit's own uvicorn server,
so the usual `--server.*` flags keep working.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from annotate_app import login_cookie
from annotate_app.outage import on_script_error

APP = Path(__file__).resolve().parent / "app.py"

app = st.App(APP, routes=login_cookie.routes(), on_script_error=on_script_error)
