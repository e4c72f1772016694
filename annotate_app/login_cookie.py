"""The login cookie, set and removed by our server so that no page script can read it.

Python cannot add a header to Streamlit's websocket, and a cookie written by a page
script (document.cookie) cannot be HttpOnly. So a login or logout leaves a one-time code
here; a line of script in the page posts the code to `ENDPOINT` on the same origin, and
the answer carries the Set-Cookie header: HttpOnly, SameSite=Strict, Path=/, Secure over
HTTPS, Max-Age the token's life (0 to remove it). The page never holds the token itself.

A code lives `CODE_LASTS` seconds and works once. The codes are kept in this process's
memory: the endpoint and the app's script threads run in the same server process
(annotate_app/asgi.py), and a code outlives no restart worth keeping it for.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from streamlit import config

from db.login_tokens import LOGIN_LASTS

COOKIE = "prefloop_login"
ENDPOINT = "_prefloop/login-cookie"
CODE_LASTS = 30.0
# The body of a request is a code only; anything longer is refused unread.
MAX_CODE_CHARS = 200

_lock = threading.Lock()
# code -> (token, or "" to remove the cookie; monotonic expiry)
_pending: dict[str, tuple[str, float]] = {}
# code -> monotonic expiry: codes redeemed lately, so a page can stop offering its code.
_redeemed: dict[str, float] = {}


def endpoint_path() -> str:
    """The endpoint's URL path, under the server's base URL path if one is set."""
    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/{ENDPOINT}" if base else f"/{ENDPOINT}"


def new_code(token: str | None) -> str:
    """A one-time code that sets the cookie to `token`, or removes it for None."""
    code = secrets.token_urlsafe(32)
    now = time.monotonic()
    with _lock:
        for old, (_, expires) in list(_pending.items()):
            if expires < now:
                del _pending[old]
        for old, expires in list(_redeemed.items()):
            if expires < now:
                del _redeemed[old]
        _pending[code] = (token or "", now + CODE_LASTS)
    return code


def is_live(code: str) -> bool:
    """Whether `code` can still be redeemed."""
    with _lock:
        entry = _pending.get(code)
    return entry is not None and entry[1] >= time.monotonic()


def was_redeemed(code: str) -> bool:
    with _lock:
        return code in _redeemed


def redeem(code: str) -> str | None:
    """The token of a live code ("" to remove the cookie); None for an unknown, used or
    expired code. A code is gone after its first try either way."""
    now = time.monotonic()
    with _lock:
        entry = _pending.pop(code, None)
        if entry is None or entry[1] < now:
            return None
        _redeemed[code] = now + CODE_LASTS
    return entry[0]


def _is_https(request: Request) -> bool:
    # Behind a TLS-terminating proxy the request arrives as http; the proxy's header says
    # how the browser connected. Trusting it can only add Secure, never remove it.
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


async def set_login_cookie(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_CODE_CHARS:
        return PlainTextResponse("Not a login code.", status_code=400)
    token = redeem(body.decode("ascii", errors="replace").strip())
    if token is None:
        return PlainTextResponse(
            "This login code is unknown, used or expired; log in again.", status_code=403
        )
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LOGIN_LASTS.total_seconds()) if token else 0,
        path="/",
        secure=_is_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


def routes() -> list[Route]:
    return [Route(endpoint_path(), set_login_cookie, methods=["POST"])]


def page_script(code: str) -> str:
    """The script a page runs to redeem `code` (URL-safe base64, safe inside JS and HTML)."""
    return (
        f"fetch({json.dumps(endpoint_path())}, {{method: 'POST', credentials: 'same-origin', "
        f"cache: 'no-store', headers: {{'Content-Type': 'text/plain'}}, "
        f"body: {json.dumps(code)}}});"
    )
