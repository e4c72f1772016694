"""A conversation prompt on the annotate page, in real Chromium and both render modes:
every turn under its role label, a long history collapsed to its last turns with the
rest in an expander, an HTML and script payload in a turn shown as text (nothing runs,
no element is made of it), and the pair still judged by key. The next pair, a plain
prompt, shows as before. The text-mode page is saved as docs/conversation.png.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from annotate_app.conversation_view import SHOWN_TURNS
from db.conversations import conversation_hash, conversation_text
from db.engine import transaction
from db.judgments import next_pair
from db.models import Pair, Round
from tests.browser import (
    DOCS,
    assert_no_app_exception,
    log_in,
    screenshot,
    wait_for_judgments_today,
    wait_for_keys,
    wait_idle,
    wait_selected,
)
from tests.browser_fixtures import stored_judgments

PAYLOAD = (
    "<script>window.pwned = 1; document.title = 'pwned';</script> MARKERSCRIPT "
    '<img src="x" onerror="window.pwned = 2"> <b onclick="window.pwned = 3">MARKERBOLD</b>'
)
HISTORY = [
    {"role": "system", "content": "MARKERSYSTEM You review films briefly."},
    {"role": "user", "content": "MARKERFIRST Name a film about a whale."},
    {"role": "assistant", "content": "Moby Dick (1956). <style>body{display:none}</style>"},
    {"role": "user", "content": "Who directed it?"},
    {"role": "assistant", "content": "John Huston. MARKERHUSTON"},
    {"role": "user", "content": f"Is it good? {PAYLOAD}"},
]
HIDDEN = len(HISTORY) - SHOWN_TURNS
# Elements a turn's content could have made: none may exist inside the conversation.
_MADE = """
() => document.querySelectorAll(['script', 'img', 'style', 'b', '[onclick]', '[onerror]']
  .map((s) => `.st-key-conversation ${s}`).join(', ')).length
"""

_BOX_HEIGHT = "() => document.querySelector('.st-key-conversation').getBoundingClientRect().height"


def _turn(page, number: int):
    return page.locator(f".st-key-turn_{number}")


@pytest.mark.parametrize("mode", ["text", "markdown"])
def test_a_conversation_shows_as_labelled_turns(app_db, new_page, mode: str) -> None:
    ann = app_db.add_user("ann")
    with transaction(app_db.sessions) as session:
        session.scalar(select(Round)).render = mode
        pair = session.get(Pair, next_pair(session, ann).pair_id)  # leased as her page
        pair.prompt.messages = HISTORY
        pair.prompt.text = conversation_text(HISTORY)
        pair.prompt.content_hash = conversation_hash(HISTORY)
        pair.prompt.chat = True
        pair_id = pair.id
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    title = page.title()
    page.locator(f".st-key-turn_{len(HISTORY)}").wait_for()
    wait_idle(page)
    wait_for_keys(page)

    # The last turns are on screen with their roles, the user's question last.
    expected_roles = ["System", "User", "Assistant", "User", "Assistant", "User"]
    for number in range(HIDDEN + 1, len(HISTORY) + 1):
        turn = _turn(page, number)
        assert turn.is_visible(), number
        assert turn.inner_text().startswith(expected_roles[number - 1]), number
    last = _turn(page, len(HISTORY)).inner_text()
    # The payload is text: its tags are readable characters, and nothing ran.
    assert "<script>" in last and "MARKERSCRIPT" in last and "MARKERBOLD" in last
    assert 'onerror="window.pwned = 2"' in last
    assert page.evaluate("typeof window.pwned") == "undefined" and page.title() == title
    assert page.evaluate(_MADE) == 0
    assert "MARKERHUSTON" in _turn(page, 5).inner_text()
    assert page.locator(".st-key-prompt").count() == 0

    if mode == "text":
        DOCS.mkdir(exist_ok=True)
        screenshot(page, DOCS / "conversation.png")

    # The earlier turns wait in a collapsed expander, which opens on a click.
    for number in range(1, HIDDEN + 1):
        assert not _turn(page, number).is_visible(), number
    page.get_by_text(f"{HIDDEN} earlier messages").click()
    _turn(page, 1).wait_for(state="visible")
    assert _turn(page, 1).inner_text().startswith("System")
    assert "MARKERSYSTEM" in _turn(page, 1).inner_text()
    assert "MARKERFIRST" in _turn(page, 2).inner_text()
    assert "<style>" in _turn(page, 3).inner_text()  # shown, not applied
    # Opened, the history scrolls inside its bounded box: the buttons stay where they were.
    assert page.evaluate(_BOX_HEIGHT) <= page.evaluate("innerHeight") * 0.34 + 2
    assert page.locator(".st-key-choice_left button").is_visible()
    assert page.evaluate(_MADE) == 0
    assert_no_app_exception(page)
    # Judged by keys; the next pair's plain prompt shows in the prompt box as before.
    page.keyboard.press("1")
    wait_selected(page, "choice_left")
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    plain = page.locator('.st-key-prompt [data-testid="stText"]')
    plain.wait_for()
    assert plain.inner_text().startswith("Prompt number")
    assert page.locator(".st-key-conversation").count() == 0
    (row,) = stored_judgments(app_db.sessions, ann)
    assert row["pair_id"] == pair_id and row["prompt"] == conversation_text(HISTORY)


def test_the_gold_pair_view_shows_a_conversation_as_turns(app_db, new_page) -> None:
    with transaction(app_db.sessions) as session:
        pair = session.scalars(select(Pair).order_by(Pair.id)).all()[2]
        pair.prompt.messages = HISTORY
        pair.prompt.text = conversation_text(HISTORY)
        pair.prompt.content_hash = conversation_hash(HISTORY)
        pair_id = pair.id
    _lead, page = app_db.logged_in(new_page, "lead", role="lead")
    number = page.get_by_label("Pair #")
    number.fill(str(pair_id))
    number.press("Enter")
    page.locator(f".st-key-turn_{len(HISTORY)}").wait_for()
    wait_idle(page)
    assert _turn(page, len(HISTORY)).inner_text().startswith("User")
    assert "<script>" in _turn(page, len(HISTORY)).inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined" and page.evaluate(_MADE) == 0
    page.get_by_text(f"{HIDDEN} earlier messages").click()
    _turn(page, 1).wait_for(state="visible")
    assert _turn(page, 1).inner_text().startswith("System")
    assert_no_app_exception(page)
