"""The annotate page in a real browser: keys typed faster than Streamlit reruns, the side
each pair is shown on, where leads land, and text that must not fool the eye or push the
buttons off screen.

The servers, databases and browser are those of tests/test_browser.py (its fixtures are
imported here), each test on a fresh copy of the template round.
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from annotate_app.login_cookie import COOKIE as LOGIN_COOKIE
from db.engine import transaction
from db.judgments import next_pair
from db.models import Judgment, Pair, PairLease
from tests.browser import (
    VIEWPORT,
    assert_no_app_exception,
    log_in,
    nothing_left,
    require_chromium,
    wait_for_judgments_today,
    wait_for_pair,
    wait_idle,
    wait_selected,
)
from tests.browser_fixtures import stored_judgments

require_chromium()

# Keys typed, and the side and strength they mean: the last choice counts, with the
# strength typed before Enter.
SEQUENCES = [
    (("2", "W", "Enter"), "right", 2),
    (("1", "E", "Enter"), "left", 3),
    (("1", "2", "Q", "Enter"), "right", 1),
]
GAPS_MS = (0, 50, 100)


def _wait_forlogin_cookie(page) -> None:
    """A reload stays logged in once the login cookie is set, a moment after the login."""
    deadline = time.monotonic() + 20
    while not any(cookie["name"] == LOGIN_COOKIE for cookie in page.context.cookies()):
        assert time.monotonic() < deadline, "the login cookie was never set"
        time.sleep(0.05)


def _type(page, keys: tuple[str, ...], gap_ms: int) -> None:
    for number, key in enumerate(keys):
        if number and gap_ms:
            page.wait_for_timeout(gap_ms)  # the annotator's pace, on purpose
        page.keyboard.press(key)


def test_keys_typed_ahead_of_the_reruns_all_count(app_db, new_page) -> None:
    user_id = app_db.add_user("ann")
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    plan = [(keys, side, strength, gap) for gap in GAPS_MS for keys, side, strength in SEQUENCES]
    seen = []
    for done, (keys, _side, _strength, gap) in enumerate(plan):
        seen.append(wait_for_pair(page))
        _type(page, keys, gap)
        wait_for_judgments_today(page, done + 1)
        assert_no_app_exception(page)
        notices = page.locator('[data-testid="stAlert"]')
        assert notices.count() == 0, notices.all_inner_texts()

    stored = stored_judgments(app_db.sessions, user_id)
    assert len(stored) == len(plan)
    for row, pair, (keys, side, strength, gap) in zip(stored, seen, plan, strict=True):
        assert row["prompt"] == pair.prompt
        assert row[row["left_sample"]] == pair.left
        picked = pair.left if side == "left" else pair.right
        assert (row[row["choice"]], row["strength"]) == (picked, strength), (keys, gap, row)
    with app_db.sessions() as session:
        spent = session.scalars(select(Judgment.ms_spent).where(Judgment.annotator_id == user_id))
        assert all(ms > 0 for ms in spent)


def test_undo_typed_right_after_enter_undoes_that_judgment(app_db, new_page) -> None:
    user_id = app_db.add_user("ann")
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    before = wait_for_pair(page)
    _type(page, ("1", "Enter", "U"), 0)
    # The metric reads 0 before and after: the notice says the undo ran.
    page.get_by_text("Your last judgment was removed").wait_for()
    wait_for_judgments_today(page, 0)
    assert stored_judgments(app_db.sessions, user_id) == []
    again = wait_for_pair(page)
    assert (again.prompt, again.left) == (before.prompt, before.left)
    # Judged again, it is stored once, with the choice typed now.
    _type(page, ("2", "Enter"), 0)
    wait_for_judgments_today(page, 1)
    [row] = stored_judgments(app_db.sessions, user_id)
    assert row[row["choice"]] == again.right


def test_the_rationale_takes_shortcut_letters_as_text(app_db, new_page) -> None:
    user_id = app_db.add_user("ann")
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    pair = wait_for_pair(page)
    page.keyboard.press("2")
    wait_selected(page, "choice_right")
    box = page.get_by_label("Rationale (optional)")
    box.click()
    box.press_sequentially("qwe 12345 u")
    box.press("Enter")
    box.press_sequentially("done")
    assert box.input_value() == "qwe 12345 u\ndone"
    wait_idle(page)
    # None of those keys chose, submitted or undid anything.
    assert page.locator('.st-key-choice_right [data-testid="stBaseButton-primary"]').count()
    strengths = '[class*="st-key-strength_"] [data-testid="stBaseButton-primary"]'
    assert page.locator(strengths).count() == 0
    assert stored_judgments(app_db.sessions, user_id) == []
    page.get_by_role("button", name="Submit").click()
    wait_for_judgments_today(page, 1)
    [row] = stored_judgments(app_db.sessions, user_id)
    assert row[row["choice"]] == pair.right
    assert (row["strength"], row["rationale"]) == (None, "qwe 12345 u\ndone")


def test_buttons_show_their_keys(app_db, new_page) -> None:
    app_db.add_user("ann")
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    wait_for_pair(page)
    for key, name in (
        ("choice_left", "Left is better 1"),
        ("choice_skip", "Skip 5"),
        ("strength_3", "Much better E"),
        ("submit", "Submit Enter"),
        ("undo", "Undo my last judgment U"),
    ):
        assert page.locator(f".st-key-{key} button").inner_text().split() == name.split()


# --- the side a pair is shown on --------------------------------------------------------


def test_reload_second_tab_and_undo_show_the_same_side(app_db, new_page) -> None:
    user_id = app_db.add_user("ann")
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    first = wait_for_pair(page)
    _wait_forlogin_cookie(page)
    # Five reloads and a second tab: a side drawn per showing would differ with
    # probability 1 - 2**-6.
    for _ in range(5):
        page.reload()
        page.get_by_text("Logged in as ann").wait_for()
        assert wait_for_pair(page) == first
    tab = page.context.new_page()
    tab.goto(app_db.base_url)
    tab.get_by_text("Logged in as ann").wait_for()
    assert wait_for_pair(tab) == first
    tab.close()
    with app_db.sessions() as session:
        lease = session.scalar(select(PairLease).where(PairLease.annotator_id == user_id))
    # Undo shows the judged pair the way round it was judged, and stores it so again.
    page.keyboard.press("1")
    wait_selected(page, "choice_left")
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    [judged] = stored_judgments(app_db.sessions, user_id)
    assert judged["left_sample"] == lease.left_sample
    assert judged[judged["left_sample"]] == first.left
    page.keyboard.press("u")
    wait_for_judgments_today(page, 0)
    page.get_by_text("Your last judgment was removed").wait_for()
    assert wait_for_pair(page) == first


# --- leads -------------------------------------------------------------------------------


def _leases(app_db) -> int:
    with app_db.sessions() as session:
        return session.scalar(select(func.count()).select_from(PairLease))


def test_a_lead_lands_on_rounds_and_leases_nothing_until_annotating(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    page.get_by_role("heading", name="Rounds").wait_for()
    wait_idle(page)
    assert page.get_by_role("heading", name="Annotate").count() == 0
    _wait_forlogin_cookie(page)
    page.reload()
    page.get_by_role("heading", name="Rounds").wait_for()
    wait_idle(page)
    # The page's own address works too, without a "page not found".
    page.goto(app_db.base_url + "/rounds")
    page.get_by_role("heading", name="Rounds").wait_for()
    wait_idle(page)
    assert page.get_by_role("dialog").count() == 0
    assert _leases(app_db) == 0
    # Annotate stays one click away, and leases a pair once opened.
    page.get_by_role("link", name="Annotate").click()
    page.get_by_role("heading", name="Annotate").wait_for()
    wait_for_pair(page)
    assert _leases(app_db) == 1
    assert_no_app_exception(page)


# --- text that must not mislead or crowd out the buttons --------------------------------

RLO_TEXT = "Say \u202etpecca\u202c or \u2067isolate\u2069 \u200f."
LONG_TEXT = ("A very long answer that goes on. " * 700)[:19_999] + "!"  # 20,000 characters


def test_bidi_controls_are_shown_and_a_long_response_keeps_the_buttons_on_screen(
    app_db, new_page
) -> None:
    ann = app_db.add_user("ann")
    with transaction(app_db.sessions) as session:
        # The pair the app gives ann, leased to her now exactly as her page would.
        pair = session.get(Pair, next_pair(session, ann).pair_id)
        pair.sample_a.text = LONG_TEXT
        pair.sample_b.text = RLO_TEXT
        pair.prompt.text = "Prompt \u202eevil\u202c"
    page = new_page()
    log_in(page, app_db.base_url, "ann")
    shown = wait_for_pair(page)
    assert shown.prompt == "Prompt \u27e6U+202E\u27e7evil\u27e6U+202C\u27e7"
    assert "Say \u27e6U+202E\u27e7tpecca\u27e6U+202C\u27e7 or \u27e6U+2067\u27e7isolate" in (
        shown.left + shown.right
    )
    assert LONG_TEXT in (shown.left, shown.right)
    # Without scrolling, every choice and strength button lies in the viewport (Enter
    # submits; the Submit button comes after the flags and the rationale).
    scrolled = page.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]').scrollTop + window.scrollY"
    )
    assert scrolled == 0
    keys = [f"choice_{c}" for c in ("left", "right", "tie", "both_bad", "skip")]
    for key in [*keys, "strength_1", "strength_3"]:
        box = page.locator(f".st-key-{key} button").bounding_box()
        assert box is not None, key
        assert box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (key, box)
        assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], (key, box)
    # The long response scrolls inside its own box.
    long_side = "left_response" if shown.left == LONG_TEXT else "right_response"
    assert page.evaluate(
        "(key) => { const box = document.querySelector(`.st-key-${key}`);"
        " return box.scrollHeight > box.clientHeight; }",
        long_side,
    )
    # What was stored is unchanged, and judging it works by keys as ever.
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    [row] = stored_judgments(app_db.sessions, ann)
    assert {row["A"], row["B"]} == {LONG_TEXT, RLO_TEXT}
    assert row["choice"] == "tie"
    page.get_by_text("Round 1").wait_for()
    assert not nothing_left(page).count()
