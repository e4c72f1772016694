"""The login cookie and the page after a login, in a real browser.

The cookie is set by our server (annotate_app/login_cookie.py), HttpOnly, so that no page
script can read the 14-day token. The fixtures (server, browser, template database) are
the ones of test_browser.py.
"""

from __future__ import annotations

import re
import time

from annotate_app.login_cookie import COOKIE, ENDPOINT
from db.login_tokens import LOGIN_LASTS
from tests.browser import (
    assert_no_app_exception,
    go,
    log_in,
    log_in_and_keep,
    login_cookie,
    poll_page,
    require_chromium,
    shows_login_form,
    submit_login,
    wait_for_cookie,
    wait_for_pair,
    wait_idle,
)

require_chromium()

# The one-time code in the script the page runs after a login or logout.
CODE_IN_PAGE = re.compile(r'body: "([A-Za-z0-9_-]{20,})"')
POST = "([url, body]) => fetch(url, {method: 'POST', body}).then((reply) => reply.status)"


def test_the_login_cookie_is_httponly_and_only_the_server_sets_it(app_db, new_page) -> None:
    app_db.add_user("ann")
    base = app_db.base_url
    page = new_page()
    first, cookie = log_in_and_keep(page, base, "ann")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["secure"] is False  # plain http here; see the https test below
    lasts = cookie["expires"] - time.time()
    assert LOGIN_LASTS.total_seconds() - 3600 < lasts <= LOGIN_LASTS.total_seconds()
    # No page script can read it, and the page never held the token.
    assert COOKIE not in page.evaluate("document.cookie")
    html = page.content()
    assert cookie["value"] not in html
    [code] = CODE_IN_PAGE.findall(html)

    # The code in the page was used up: replaying it, or a forged one, sets nothing.
    endpoint = f"{base}/{ENDPOINT}"
    assert page.evaluate(POST, [endpoint, code]) == 403
    assert page.evaluate(POST, [endpoint, "forged-code-" + "x" * 30]) == 403
    assert login_cookie(page)["value"] == cookie["value"]

    # A reload reads the cookie on the server: same user, same leased pair.
    page.reload()
    page.get_by_text("Logged in as ann").wait_for()
    assert wait_for_pair(page).prompt == first.prompt

    # Logging out removes the cookie; the next reload asks for the password.
    page.get_by_role("button", name="Log out").click()
    shows_login_form(page)
    wait_for_cookie(page, present=False)
    page.reload()
    shows_login_form(page)


def test_over_https_the_login_cookie_is_secure(app_db, new_page) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto: https) the cookie gets Secure."""
    app_db.add_user("ann")
    page = new_page()
    set_cookies: list[str] = []

    def through_proxy(route) -> None:
        headers = dict(route.request.headers, **{"x-forwarded-proto": "https"})
        response = route.fetch(headers=headers)
        header = response.headers.get("set-cookie", "")
        route.fulfill(response=response)
        set_cookies.append(header)

    page.route(f"**/{ENDPOINT}", through_proxy)
    log_in(page, app_db.base_url, "ann")
    # The page may post its code more than once (it offers it on every run until the
    # server has seen it); the answers after the first carry no cookie.
    poll_page(page, lambda: any(header.startswith(f"{COOKIE}=") for header in set_cookies))
    header = next(header for header in set_cookies if header.startswith(f"{COOKIE}="))
    attributes = [part.strip().lower() for part in header.split(";")]
    assert attributes[0].startswith(f"{COOKIE}=")
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(attributes)


def test_after_login_the_page_asked_for_is_shown(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    app_db.add_user("ann")
    base = app_db.base_url
    lead = new_page()
    # A link to a lead page, followed while logged out: the login form at that address,
    # no "Page not found", and the page itself right after the login.
    go(lead, base, "/quality")
    assert lead.get_by_role("dialog").count() == 0
    submit_login(lead, "boss")
    lead.get_by_role("heading", name="Quality").wait_for()
    lead.get_by_text("Logged in as boss").wait_for()
    assert lead.url.endswith("/quality")
    assert_no_app_exception(lead)

    # An annotator following the same kind of link gets their own page, not the lead's.
    annotator = new_page()
    go(annotator, base, "/users")
    submit_login(annotator, "ann")
    annotator.get_by_role("heading", name="Annotate").wait_for()
    wait_idle(annotator)
    assert annotator.get_by_text("Add a user").count() == 0
    assert annotator.get_by_role("heading", name="Users").count() == 0
    assert_no_app_exception(annotator)
