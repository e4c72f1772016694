"""Helpers for the browser tests: the `streamlit run` server that `rlhf serve` starts, and
waits and reads for pages of the app in headless Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlhf_train.loop.serve import streamlit_command

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
PASSWORD = "password-123"
SERVER_START_SECONDS = 60

# True when no script run is in progress and the page is connected: Streamlit marks its
# app element with the run state, and elements of a previous run that the current run
# has not replaced yet as stale. An action starts its run asynchronously, so a test waits
# for this together with something the run changes (see _METRIC_IS).
_IDLE = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app !== null
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && document.querySelector('[data-stale="true"]') === null;
}
"""
_METRIC_IS = """
(n) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const metric = document.querySelector('[data-testid="stMetricValue"]');
  return app !== null
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && document.querySelector('[data-stale="true"]') === null
    && metric !== null && metric.innerText.trim() === String(n);
}
"""


def require_chromium() -> None:
    """Skip the calling test module when Chromium is missing; under CI, fail instead:
    there it is installed, and a skipped browser suite would pass unseen."""
    if CHROMIUM.exists():
        return
    reason = f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def poll(condition, timeout: float = 20.0) -> None:
    """Wait until `condition()` is true, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def poll_page(page, condition, timeout: float = 20.0) -> None:
    """poll(), for a condition that a Playwright event handler (page.route, page.on) makes
    true: the sync API runs handlers only inside its own calls, so the wait is one."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(50)


def login_cookie(page, name: str = "prefloop_login") -> dict | None:
    """The browser's login cookie, as Playwright reports it, or None."""
    found = [cookie for cookie in page.context.cookies() if cookie["name"] == name]
    return found[0] if found else None


def wait_for_cookie(page, present: bool) -> dict | None:
    poll(lambda: (login_cookie(page) is not None) == present)
    return login_cookie(page)


def log_in_and_keep(page, base_url: str, name: str) -> tuple[Shown, dict]:
    """Log `name` in, wait for the first pair and for the login cookie; both returned."""
    log_in(page, base_url, name)
    first = wait_for_pair(page)
    return first, wait_for_cookie(page, present=True)


def shows_login_form(page) -> None:
    page.get_by_role("button", name="Log in").wait_for()
    wait_idle(page)  # the sidebar of the run before goes once this run is over
    assert page.get_by_text("Logged in as").count() == 0
    assert_no_app_exception(page)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(
    command: list[str], port: int, environment: dict[str, str], log_path: Path
) -> Iterator[str]:
    """Run `command` (a Streamlit server on `port`); yield its base URL once
    /_stcore/health answers, and stop it afterwards, killing it if it lingers."""
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while True:
                try:
                    url = f"http://127.0.0.1:{port}/_stcore/health"
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        if reply.read() == b"ok":
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"streamlit did not come up on port {port}:\n{log_path.read_text()}"
                    )
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextmanager
def streamlit_server(db_url: str, log_path: Path) -> Iterator[str]:
    """The command `rlhf serve` runs, on a free port with RLHF_DB_URL=db_url."""
    port = free_port()
    environment = dict(os.environ, RLHF_DB_URL=db_url)
    with running_server(streamlit_command(port, "127.0.0.1"), port, environment, log_path) as url:
        yield url


def wait_idle(page) -> None:
    """Wait until no script run is in progress and no stale element is left."""
    page.wait_for_function(_IDLE)


def go(page, base_url: str, path: str = "/") -> None:
    """Open `path` in this tab (a new Streamlit session) and wait for the first run.

    Streamlit answers a path that is not in the session's navigation with a "Page not
    found" dialog over the main page; it is closed so the page underneath can be used.
    """
    page.goto(base_url + path)
    page.locator('[data-testid="stMain"]').wait_for()
    wait_idle(page)
    dialog = page.get_by_role("dialog")
    if dialog.count():
        dialog.get_by_role("button", name="Close").click()
        dialog.wait_for(state="detached")


def submit_login(page, name: str, password: str = PASSWORD) -> None:
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def log_in(page, base_url: str, name: str, password: str = PASSWORD, path: str = "/") -> None:
    """Log in from a fresh session at `path` and wait for the page after the login."""
    go(page, base_url, path)
    submit_login(page, name, password)
    page.get_by_text(f"Logged in as {name}").wait_for()
    wait_idle(page)


@dataclass(frozen=True)
class Shown:
    """What the annotate page shows: the prompt and the two responses, left and right."""

    prompt: str
    left: str
    right: str


def shown(page) -> Shown:
    def text(key: str) -> str:
        return page.locator(f'.st-key-{key} [data-testid="stText"]').inner_text()

    return Shown(text("prompt"), text("left_response"), text("right_response"))


# Every button of the annotate page that has a keyboard shortcut, by widget key.
PAIR_BUTTONS = (
    *(f"choice_{choice}" for choice in ("left", "right", "tie", "both_bad", "skip")),
    *(f"strength_{strength}" for strength in (1, 2, 3)),
    "submit",
    "undo",
)
_BUTTONS_SHOWN = """
(keys) => keys.every((key) => document.querySelector(`.st-key-${key} button`) !== null)
"""


def wait_for_pair(page) -> Shown:
    """Wait until a pair is shown and its buttons can be used, and return what it shows.

    Streamlit draws the rows of buttons a moment after the run has ended and the responses
    are on screen; a shortcut key pressed in that moment has no button to press.
    """
    page.locator('.st-key-right_response [data-testid="stText"]').wait_for()
    wait_idle(page)
    page.wait_for_function(_BUTTONS_SHOWN, arg=list(PAIR_BUTTONS))
    wait_for_keys(page)
    return shown(page)


def wait_for_keys(page) -> None:
    """Wait until the page's key handler (annotate_app/pair_keys.js) has loaded and is not
    waiting for the answer to a submit or undo: keys pressed from now on count."""
    page.wait_for_function("() => document.documentElement.dataset.pairKeys === 'ready'")


def wait_for_judgments_today(page, count: int) -> None:
    """Wait until the "My judgments today" metric reads `count` and the run is over."""
    page.wait_for_function(_METRIC_IS, arg=count)


def wait_selected(page, key: str) -> None:
    """Wait until the button with widget key `key` shows as selected (primary)."""
    page.locator(f'.st-key-{key} [data-testid="stBaseButton-primary"]').wait_for()


def nothing_left(page):
    return page.get_by_text("Nothing left to judge right now.")


def assert_no_app_exception(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.all_inner_texts()


def screenshot(page, path: Path) -> None:
    """A screenshot of the whole page. Streamlit scrolls inside its main element, not the
    document, so the viewport is made tall enough to hold everything first."""
    for _ in range(5):
        overflow = page.evaluate(
            """() => {
              const main = document.querySelector('[data-testid="stMain"]');
              return main.scrollHeight - main.clientHeight;
            }"""
        )
        if overflow <= 0:
            break
        size = page.viewport_size
        page.set_viewport_size({"width": size["width"], "height": size["height"] + overflow})
        wait_idle(page)
    page.screenshot(path=path, full_page=True)
