"""Responses planted with everything that could run, fetch, mislead or crowd out the
buttons, shown in both render modes (text and markdown) in real Chromium: nothing runs,
nothing is fetched from a server the test listens on, the marker words are readable,
and the choice buttons stay on screen, uncovered, and record judgments.

The servers, databases and browser are those of tests/browser_fixtures.py, each test on
a fresh copy of the template round.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from db.engine import transaction
from db.judgments import next_pair
from db.models import Pair, Round
from tests.browser import (
    PAIR_BUTTONS,
    VIEWPORT,
    assert_no_app_exception,
    log_in,
    require_chromium,
    wait_for_judgments_today,
    wait_for_keys,
    wait_idle,
    wait_selected,
)
from tests.browser_fixtures import stored_judgments

require_chromium()

SCREEN_1_MARKERS = [
    *("MARKERHEAD", "MARKERSCRIPT", "MARKERIMGTAG", "MARKERCOVER", "MARKERALT"),
    *("MARKERDATAIMG", "MARKERLINK", "MARKERJS", "MARKERDATA", "MARKERANCHOR"),
    *("MARKERLIST", "MARKERQUOTE", "MARKERRTL", "level49", "👍🏽"),
]
CHOICE_KEYS = [f"choice_{c}" for c in ("left", "right", "tie", "both_bad", "skip")]


class _Counting(BaseHTTPRequestHandler):
    """Answers everything with a tiny body and counts what it was asked."""

    paths: list[str]

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(b"x")

    do_POST = do_GET

    def log_message(self, *args) -> None:  # quiet
        pass


@contextmanager
def _listening() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server on a free port: (port, the paths it was asked for)."""
    paths: list[str] = []
    handler = type("Handler", (_Counting,), {"paths": paths})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


def _hostile(port: int) -> str:
    bait = f"http://127.0.0.1:{port}"
    return "\n\n".join(
        [
            "# MARKERHEAD heading",
            "<script>window.pwned = 1; document.title = 'pwned';</script> MARKERSCRIPT",
            f'<img src="{bait}/onerror.png" onerror="window.pwned = 2"> MARKERIMGTAG',
            f'<iframe src="{bait}/frame" srcdoc="<script>parent.pwned = 3</script>"></iframe>',
            "<style>body { display: none } [data-testid=stButton] { display: none }</style>",
            '<div style="position:fixed;inset:0;z-index:99999;background:red">MARKERCOVER</div>',
            f"![MARKERALT kitten]({bait}/markdown-image.png)",
            "![MARKERDATAIMG](data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==)",
            f"[MARKERLINK follow me]({bait}/followed)",
            "[MARKERJS run me](javascript:window.pwned=4)",
            "[MARKERDATA open me](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
            f"<a href='{bait}/raw-anchor'>MARKERANCHOR</a> <{bait}/autolink>",
        ]
    )


def _deep_rtl_emoji() -> str:
    lists = "\n".join("  " * depth + f"- level{depth}" for depth in range(50))
    quotes = ">" * 50 + " MARKERQUOTE"
    rtl = "مرحبا بالعالم MARKERRTL שלום עולם 👍🏽🎉 \u202etpecca\u202c"
    return f"{lists} MARKERLIST\n\n{quotes}\n\n{rtl}"


def _long() -> str:
    """20,000 characters of Markdown: headings, a table, code with a very long line."""
    block = (
        "## Section\n\nSome *emphasis* and **strong** text with `inline code`.\n\n"
        "| col | other |\n|---|---|\n| cell | value |\n\n"
        "```python\n" + "x = 1  # " + "wide " * 60 + "\n```\n\n"
    )
    text = "MARKERLONG start\n\n" + block * (20_000 // len(block))
    return (text + "filler " * 4000)[: 20_000 - len(" MARKEREND")] + " MARKEREND"


def _wide() -> str:
    return "# " + "HUGE " * 300 + "\n\n```\n" + "w" * 5000 + "\n```\n\nMARKERWIDE"


def _wait_for_screen(page) -> None:
    """A pair on screen, its run over, its buttons drawn and the key handler ready."""
    page.locator(
        '.st-key-right_response [data-testid="stText"], .st-key-right_response .md-safe'
    ).wait_for()
    wait_idle(page)
    page.wait_for_function(
        "(keys) => keys.every((k) => document.querySelector(`.st-key-${k} button`) !== null)",
        arg=list(PAIR_BUTTONS),
    )
    wait_for_keys(page)


def _response_text(page, side: str) -> str:
    return page.locator(f".st-key-{side}_response").inner_text()


# Elements that could run, load, navigate or restyle, inside the two response boxes.
_DANGEROUS = """
() => document.querySelectorAll([
  'script', 'img', 'iframe', 'style', 'link', 'a', 'object', 'embed', 'svg', 'video',
  'audio', 'form', 'input', 'base', 'meta', '[style]', '[onerror]', '[href]', '[src]'
].map((s) => `.st-key-left_response ${s}, .st-key-right_response ${s}`).join(', ')).length
"""
# Each button's centre: inside the viewport and the button is what lies there.
_UNCOVERED = """
(keys) => keys.filter((key) => {
  const button = document.querySelector(`.st-key-${key} button`);
  const r = button.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const inside = r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth;
  const top = document.elementFromPoint(x, y);
  return !(inside && top !== null && button.contains(top));
})
"""
_SCROLL_TO_END = """
() => ['left', 'right'].reduce((sum, side) => {
  const box = document.querySelector(`.st-key-${side}_response`);
  box.scrollTop = box.scrollHeight;
  return sum + box.scrollHeight;
}, 0)
"""
_SCROLLED = """
() => ['left', 'right'].map((side) =>
  document.querySelector(`.st-key-${side}_response`).scrollTop)
"""
_BOX_BOUNDS = """
() => ['left', 'right'].map((side) => {
  const box = document.querySelector(`.st-key-${side}_response`);
  const r = box.getBoundingClientRect();
  return {height: r.height, right: r.right, limit: innerHeight * 0.42 + 2,
          scrolls: box.scrollHeight > box.clientHeight};
})
"""


def _assert_inert(page, port: int, paths: list[str], seen: list[str]) -> None:
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.title() != "pwned"
    assert page.evaluate(_DANGEROUS) == 0
    assert paths == [], paths
    assert not [url for url in seen if f":{port}" in url], seen
    assert page.evaluate(_UNCOVERED, CHOICE_KEYS + ["strength_1", "strength_3"]) == []
    for box in page.evaluate(_BOX_BOUNDS):
        assert box["height"] <= box["limit"], box
        assert box["right"] <= VIEWPORT["width"], box
    assert_no_app_exception(page)


@pytest.mark.parametrize("mode", ["text", "markdown"])
def test_planted_responses_stay_inert_and_judgeable(app_db, new_page, mode: str) -> None:
    ann = app_db.add_user("ann")
    with _listening() as (port, paths):
        with transaction(app_db.sessions) as session:
            session.scalar(select(Round)).render = mode
            first = session.get(Pair, next_pair(session, ann).pair_id)  # leased as her page
            first.sample_a.text, first.sample_b.text = _hostile(port), _deep_rtl_emoji()
            for pair in session.scalars(select(Pair).where(Pair.id != first.id)):
                pair.sample_a.text, pair.sample_b.text = _long(), _wide()
            first_id = first.id
        page = new_page()
        seen: list[str] = []
        page.on("request", lambda request: seen.append(request.url))
        log_in(page, app_db.base_url, "ann")
        title = page.title()

        # Screen 1: the hostile response and the deep one.
        _wait_for_screen(page)
        shown = _response_text(page, "left") + _response_text(page, "right")
        for marker in SCREEN_1_MARKERS:
            assert marker in shown, (mode, marker)
        assert "\u27e6U+202E\u27e7tpecca" in shown  # bidi controls revealed in both modes
        assert f"127.0.0.1:{port}/markdown-image.png" in shown  # an image's address, as text
        if mode == "markdown":
            assert page.locator(".md-safe h1", has_text="MARKERHEAD").count() == 1
            # The link's text can be clicked: nothing follows.
            page.locator(".md-link", has_text="MARKERLINK").click()
            page.wait_for_timeout(300)
        _assert_inert(page, port, paths, seen)
        assert page.title() == title
        # Judged by clicks, both boxes scrolled to their end first.
        page.evaluate(_SCROLL_TO_END)
        page.locator(".st-key-choice_left button").click()
        wait_selected(page, "choice_left")
        page.locator(".st-key-submit button").click()
        wait_for_judgments_today(page, 1)

        # Screen 2: a 20,000-character response and a very wide one.
        _wait_for_screen(page)
        shown = _response_text(page, "left") + _response_text(page, "right")
        for marker in ("MARKERLONG", "MARKEREND", "MARKERWIDE"):
            assert marker in shown, (mode, marker)
        # The new pair starts at the top of its boxes, whatever the last one was scrolled to.
        assert page.evaluate(_SCROLLED) == [0, 0]
        _assert_inert(page, port, paths, seen)
        # The long one scrolls inside its box.
        assert any(box["scrolls"] for box in page.evaluate(_BOX_BOUNDS))
        if mode == "markdown":
            wide = page.locator(".md-safe pre", has_text="wwww").first
            assert wide.evaluate("(pre) => pre.scrollWidth > pre.clientWidth")
            heading = page.locator(".md-safe h1").first.evaluate(
                "(h) => parseFloat(getComputedStyle(h).fontSize)"
            )
            assert heading <= 24  # no huge headings
        # Judged by keys.
        page.keyboard.press("2")
        wait_selected(page, "choice_right")
        page.keyboard.press("Enter")
        wait_for_judgments_today(page, 2)
        assert paths == [] and not [url for url in seen if f":{port}" in url]

    first_row, second_row = stored_judgments(app_db.sessions, ann)
    assert first_row["pair_id"] == first_id
    assert first_row[first_row["choice"]] == first_row[first_row["left_sample"]]  # left won
    assert second_row["choice"] != second_row["left_sample"]  # right won
    assert {second_row["A"], second_row["B"]} == {_long(), _wide()}
    assert len(_long()) == 20_000


def test_the_rounds_page_shows_and_changes_the_render_mode(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    page.get_by_role("link", name="Rounds").click()
    page.get_by_role("heading", name="Rounds").wait_for()
    wait_idle(page)
    frame = page.locator('[data-testid="stDataFrame"]')
    frame.locator('[role="gridcell"]').first.wait_for(state="attached")
    header = frame.locator('[role="columnheader"]').all_text_contents()
    cells = frame.locator('[role="gridcell"]').all_text_contents()
    assert dict(zip(header, cells, strict=True))["shown as"] == "text"  # one round
    page.get_by_text("Markdown (rendered safely", exact=False).click()
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Saved.").wait_for()
    with app_db.sessions() as session:
        assert session.scalar(select(Round.render)) == "markdown"
    assert_no_app_exception(page)
