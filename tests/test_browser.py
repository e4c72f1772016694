"""The annotate app in a real browser: `streamlit run` servers on test databases, driven
by headless Chromium the way annotators and leads use it.

Most tests share one server whose SQLite database is reset to a template before each
test; the tests that need a server of their own (a fresh process, or PostgreSQL) start
one. Every test opens fresh browser contexts.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from annotate_app.login_cookie import COOKIE as LOGIN_COOKIE
from db.engine import transaction
from db.judgments import next_pair, record_judgment
from db.login_tokens import LOGIN_LASTS
from db.models import Judgment, LoginToken, Pair, Round, User
from db.users import create_user, reset_password
from rlhf_train.rounds.generate import generate_round
from tests.browser import (
    DOCS,
    PASSWORD,
    VIEWPORT,
    Shown,
    assert_no_app_exception,
    go,
    log_in,
    log_in_and_keep,
    nothing_left,
    poll,
    require_chromium,
    screenshot,
    shows_login_form,
    submit_login,
    wait_for_cookie,
    wait_for_judgments_today,
    wait_for_pair,
    wait_idle,
    wait_selected,
)
from tests.browser_fixtures import N_PAIRS, set_texts, stored_judgments
from tests.helpers import round_request, store_prompts

require_chromium()

HOSTILE = (
    "<script>window.__pwned=1</script>\n"
    '<img src=x onerror="window.__pwned=2">\n'
    "![x](http://example.invalid/a.png)"
)


# --- tests ------------------------------------------------------------------------------


def test_login_refuses_wrong_passwords_and_locks_after_five(app_db, new_page) -> None:
    user_id = app_db.add_user("ann")
    app_db.add_user("bea")
    base = app_db.base_url
    page = new_page()
    go(page, base)
    alert = page.locator('[data-testid="stAlertContentError"]')

    submit_login(page, "nobody", PASSWORD)
    alert.get_by_text("Wrong name or password.").wait_for()

    def failed_logins() -> tuple[int, object]:
        with app_db.sessions() as session:
            user = session.get(User, user_id)
            return user.failed_logins, user.locked_until

    for attempt in range(1, 5):
        submit_login(page, "ann", f"not-the-password-{attempt}")
        poll(lambda attempt=attempt: failed_logins()[0] == attempt)
        wait_idle(page)
        assert alert.inner_text() == "Wrong name or password."
    submit_login(page, "ann", "not-the-password-5")
    alert.get_by_text("locked").wait_for()
    assert "Too many failed attempts" in alert.inner_text()
    assert failed_logins()[1] is not None

    # The right password does not open a locked account: the message says why.
    submit_login(page, "ann", PASSWORD)
    alert.get_by_text("more minutes").wait_for()
    assert "locked" in alert.inner_text()
    assert page.get_by_role("heading", name="Annotate").count() == 0

    # Another account is not affected; logging in shows the annotate page.
    submit_login(page, "bea", PASSWORD)
    page.get_by_role("heading", name="Annotate").wait_for()
    page.get_by_text("Logged in as bea").wait_for()
    wait_idle(page)
    assert alert.count() == 0
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()
    assert_no_app_exception(page)


# --- staying logged in -------------------------------------------------------------------


def _open_with_cookie(browser, base_url: str, token: str):
    """A page in a browser that was never logged in, but carries `token` as its cookie."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    context.add_cookies([{"name": LOGIN_COOKIE, "value": token, "url": base_url}])
    return context.new_page()


def test_a_reload_and_a_second_tab_stay_logged_in_until_logout(app_db, new_page, browser) -> None:
    app_db.add_user("ann")
    base = app_db.base_url
    page = new_page()
    first, cookie = log_in_and_keep(page, base, "ann")
    # The cookie is a random token, not the name or the password, and lasts as long as
    # the login does.
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert "ann" not in cookie["value"] and len(cookie["value"]) >= 40
    lasts = cookie["expires"] - time.time()
    assert LOGIN_LASTS.total_seconds() - 3600 < lasts <= LOGIN_LASTS.total_seconds()

    # A reload: no password asked, same user, and the leased pair is shown again.
    page.reload()
    page.get_by_text("Logged in as ann").wait_for()
    assert wait_for_pair(page).prompt == first.prompt
    # A second tab of the same browser.
    tab = page.context.new_page()
    go(tab, base)
    tab.get_by_text("Logged in as ann").wait_for()
    assert_no_app_exception(tab)

    # Logging out removes the cookie and ends the token itself: the other tab is logged
    # out at its next reload, and a copy of the old cookie logs nobody in.
    page.get_by_role("button", name="Log out").click()
    shows_login_form(page)
    wait_for_cookie(page, present=False)
    page.reload()
    shows_login_form(page)
    tab.reload()
    shows_login_form(tab)
    copied = _open_with_cookie(browser, base, cookie["value"])
    try:
        go(copied, base)
        shows_login_form(copied)
        wait_for_cookie(copied, present=False)  # the dead cookie is removed, too
    finally:
        copied.context.close()


def test_a_password_reset_logs_the_user_out_of_open_pages(app_db, new_page) -> None:
    user_id, page = app_db.logged_in(new_page, "ann")
    base = app_db.base_url
    wait_for_pair(page)
    wait_for_cookie(page, present=True)
    with transaction(app_db.sessions) as session:
        reset_password(session, user_id, "a-new-password-456")
        live = session.scalar(
            select(func.count()).select_from(LoginToken).where(LoginToken.revoked_at.is_(None))
        )
        assert live == 0
    # The open page's next action finds the login ended; a reload asks for the password.
    page.get_by_role("button", name="Left is better").click()
    shows_login_form(page)
    page.reload()
    shows_login_form(page)
    log_in(page, base, "ann", password="a-new-password-456")
    wait_for_pair(page)


def test_a_cookie_that_is_no_login_shows_the_login_form(app_db, browser) -> None:
    page = _open_with_cookie(browser, app_db.base_url, "not-a-token")
    try:
        go(page, app_db.base_url)
        shows_login_form(page)
        wait_for_cookie(page, present=False)
    finally:
        page.context.close()


# (side, by keyboard, strength: key or button label): ten judgments, keyboard and
# clicks alternating, each mode choosing left and right.
JUDGING_PLAN = [
    ("left", True, None),
    ("right", False, None),
    ("right", True, "E"),
    ("left", False, "Slightly"),
    ("left", True, None),
    ("right", False, "Clearly"),
    ("right", True, "Q"),
    ("left", False, None),
    ("left", True, "W"),
    ("right", False, "Much better"),
]
STRENGTH_OF = {"Q": 1, "W": 2, "E": 3, "Slightly": 1, "Clearly": 2, "Much better": 3}
# The last judgment also carries flags and a rationale (the last, so that no later
# judgment depends on them being cleared: see the test after this one).
LAST_FLAGS = ("Unsafe", "Off-topic")
LAST_RATIONALE = "Both are short; the right one at least stays on topic."


def _choose(page, side: str, keyboard: bool, strength: str | None) -> None:
    if keyboard:
        page.keyboard.press("1" if side == "left" else "2")
        wait_selected(page, f"choice_{side}")
        if strength:
            page.keyboard.press(strength)
            wait_selected(page, f"strength_{STRENGTH_OF[strength]}")
    else:
        label = "Left is better" if side == "left" else "Right is better"
        page.get_by_role("button", name=label).click()
        wait_selected(page, f"choice_{side}")
        if strength:
            page.get_by_role("button", name=strength).click()
            wait_selected(page, f"strength_{STRENGTH_OF[strength]}")


def _flag_and_explain(page, flags: tuple[str, ...], rationale: str) -> None:
    for flag in flags:
        page.get_by_text(flag, exact=True).click()
        page.wait_for_function(
            "(name) => [...document.querySelectorAll('input[type=checkbox]')].some("
            "(box) => box.checked && box.closest('label').innerText.trim() === name)",
            arg=flag,
        )
        wait_idle(page)
    page.get_by_label("Rationale (optional)").fill(rationale)


def test_ten_judgments_by_keyboard_and_clicks_store_the_side_shown(app_db, new_page) -> None:
    user_id, page = app_db.logged_in(new_page, "ann")
    page.get_by_text(f"Round 1: 0 of {N_PAIRS * 3} judgments").wait_for()
    seen: list[Shown] = []
    for done, (side, keyboard, strength) in enumerate(JUDGING_PLAN):
        pair = wait_for_pair(page)
        assert pair.prompt not in [s.prompt for s in seen], "a judged pair came back"
        seen.append(pair)
        _choose(page, side, keyboard, strength)
        last = done == len(JUDGING_PLAN) - 1
        if last:
            _flag_and_explain(page, LAST_FLAGS, LAST_RATIONALE)
        if keyboard:
            page.keyboard.press("Enter")
        else:
            page.get_by_role("button", name="Submit").click()
        wait_for_judgments_today(page, done + 1)
        assert_no_app_exception(page)
        # No notice: not "Choose an answer first", nor a second submit of the key.
        notices = page.locator(
            '[data-testid="stAlertContentWarning"], [data-testid="stAlertContentInfo"]'
        )
        assert notices.count() == 0, notices.all_inner_texts()

    nothing_left(page).wait_for()
    page.get_by_text(f"Round 1: {N_PAIRS} of {N_PAIRS * 3} judgments").wait_for()

    stored = stored_judgments(app_db.sessions, user_id)
    assert len(stored) == len(JUDGING_PLAN)
    for row, pair, (side, _keyboard, strength) in zip(stored, seen, JUDGING_PLAN, strict=True):
        assert row["prompt"] == pair.prompt
        assert {pair.left, pair.right} == {row["A"], row["B"]}
        # left_sample says which stored sample was displayed on the left...
        assert row[row["left_sample"]] == pair.left
        # ...and the choice names the sample that was shown on the side picked.
        picked_text = pair.left if side == "left" else pair.right
        assert row[row["choice"]] == picked_text, (row, pair, side)
        assert row["strength"] == (STRENGTH_OF[strength] if strength else None)
    assert [row["flags"] for row in stored[:-1]] == [{}] * (len(stored) - 1)
    assert stored[-1]["flags"] == {"unsafe": True, "off_topic": True}
    assert [row["rationale"] for row in stored] == [""] * (len(stored) - 1) + [LAST_RATIONALE]
    # The shuffle is real: both sides held sample A at least once in ten pairs (a
    # fair coin fails this with probability 2 / 1024).
    assert {row["left_sample"] for row in stored} == {"A", "B"}


def test_flags_and_rationale_do_not_carry_over_to_the_next_pair(app_db, new_page) -> None:
    user_id, page = app_db.logged_in(new_page, "ann")
    first = wait_for_pair(page)
    _choose(page, "left", False, None)
    _flag_and_explain(page, ("Unsafe",), "Unsafe advice.")
    page.get_by_role("button", name="Submit").click()
    wait_for_judgments_today(page, 1)
    second = wait_for_pair(page)
    assert second.prompt != first.prompt
    _choose(page, "right", False, None)
    page.get_by_role("button", name="Submit").click()
    wait_for_judgments_today(page, 2)
    stored = stored_judgments(app_db.sessions, user_id)
    assert [(row["flags"], row["rationale"]) for row in stored] == [
        ({"unsafe": True}, "Unsafe advice."),
        ({}, ""),
    ]


def test_undo_removes_the_judgment_and_shows_the_pair_again(app_db, new_page) -> None:
    user_id, page = app_db.logged_in(new_page, "ann")
    before = wait_for_pair(page)
    page.keyboard.press("2")
    wait_selected(page, "choice_right")
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    assert wait_for_pair(page).prompt != before.prompt
    [judged] = stored_judgments(app_db.sessions, user_id)
    assert judged["prompt"] == before.prompt

    page.keyboard.press("u")
    wait_for_judgments_today(page, 0)
    page.get_by_text("Your last judgment was removed").wait_for()
    again = wait_for_pair(page)
    assert again.prompt == before.prompt
    assert {again.left, again.right} == {before.left, before.right}
    assert stored_judgments(app_db.sessions, user_id) == []
    with app_db.sessions() as session:
        assert session.get(Pair, judged["pair_id"]).judgment_count == 0

    # Judging it again works, and the clicked undo button does the same as U.
    page.get_by_role("button", name="Left is better").click()
    wait_selected(page, "choice_left")
    page.get_by_role("button", name="Submit").click()
    wait_for_judgments_today(page, 1)
    page.get_by_role("button", name="Undo my last judgment").click()
    wait_for_judgments_today(page, 0)
    assert wait_for_pair(page).prompt == before.prompt
    assert stored_judgments(app_db.sessions, user_id) == []
    assert_no_app_exception(page)


def test_untrusted_text_renders_inert(app_db, new_page) -> None:
    ann = app_db.add_user("ann")
    with transaction(app_db.sessions) as session:
        # The pair the app gives ann, leased to her now exactly as her page would.
        first = session.get(Pair, next_pair(session, ann).pair_id)
        first.sample_a.text = HOSTILE
        first.sample_b.text = "A harmless answer."
        first.prompt.text = "Prompt <b>bold</b> **stars** <script>window.__pwned=3</script>"
        prompt_text = first.prompt.text
    base = app_db.base_url
    page = new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    log_in(page, base, "ann")
    pair = wait_for_pair(page)
    assert pair.prompt == prompt_text
    hostile_side = "left_response" if pair.left == HOSTILE else "right_response"
    assert HOSTILE in (pair.left, pair.right)
    # Shown verbatim, as text: the inner text of the response is the stored string.
    assert page.locator(f'.st-key-{hostile_side} [data-testid="stText"]').is_visible()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    for key in ("prompt", "left_response", "right_response"):
        assert page.locator(f".st-key-{key} img").count() == 0
        assert page.locator(f".st-key-{key} script").count() == 0
        assert page.locator(f".st-key-{key} b").count() == 0
    # Judging it keeps everything inert on the next run too.
    page.keyboard.press("3")
    wait_selected(page, "choice_tie")
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert not [url for url in requests if "example.invalid" in url], requests


def test_annotator_cannot_open_lead_pages_by_url(app_db, new_page) -> None:
    app_db.add_user("ann")
    app_db.add_user("boss", "lead")
    base = app_db.base_url
    page = new_page()
    go(page, base)  # the app's own entry page first
    for path, lead_content in (("/quality", "Annotators"), ("/users", "Add a user")):
        # A URL opens a new session. The first asks to log in (after "Page not found"),
        # the second finds the browser logged in already; either way an annotator gets
        # their own page, not the lead's.
        if path == "/quality":
            log_in(page, base, "ann", path=path)
        else:
            go(page, base, path)
        page.get_by_text("Logged in as ann").wait_for()
        page.get_by_role("heading", name="Annotate").wait_for()
        wait_idle(page)
        assert page.get_by_text(lead_content).count() == 0
        assert page.get_by_role("heading", name="Quality").count() == 0
        assert page.get_by_role("heading", name="Users").count() == 0
        assert page.get_by_role("link", name="Quality").count() == 0
        assert_no_app_exception(page)

    lead = new_page()
    log_in(lead, base, "boss")
    lead.get_by_role("link", name="Quality").click()
    lead.get_by_role("heading", name="Quality").wait_for()
    lead.get_by_text("No judgments yet.").wait_for()
    lead.get_by_role("link", name="Users").click()
    lead.get_by_text("Add a user").wait_for()
    assert lead.get_by_text("This page is for leads.").count() == 0
    assert_no_app_exception(lead)


def test_a_fresh_server_serves_no_page_outside_the_navigation(own_app_db, new_page) -> None:
    base = own_app_db.base_url
    page = new_page()
    # The very first request to this server is for a lead page.
    go(page, base, "/quality")
    assert page.get_by_role("link", name="rounds").count() == 0
    assert page.get_by_text("Please log in.").count() == 0
    # The login form, not a page-not-found dialog. Its button can be drawn a moment after
    # the run has ended, so this waits a little rather than looking once.
    page.get_by_role("button", name="Log in").wait_for(timeout=5000)


@pytest.fixture
def three_pair_round(workspace, tiny_policy):
    """Round 1 with three pairs and overlap 1, on SQLite and on PostgreSQL."""
    store_prompts(workspace, [f"Shared prompt {i}." for i in range(3)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=3), False)
    with transaction(workspace.sessions) as session:
        set_texts(session)
        session.scalar(select(Round)).overlap = 1
    return workspace


def test_two_annotators_at_once_never_over_collect(three_pair_round, serve, new_page) -> None:
    workspace = three_pair_round
    with transaction(workspace.sessions) as session:
        for name in ("ann", "bob"):
            create_user(session, name, "annotator", PASSWORD)
    base = serve(workspace.db_url)
    pages = {name: new_page() for name in ("ann", "bob")}
    for name, page in pages.items():
        log_in(page, base, name)
    done = dict.fromkeys(pages, 0)
    active = set(pages)
    for _ in range(10):
        if not active:
            break
        # Both choose, then both submit back to back, then both wait.
        for name in sorted(active):
            page = pages[name]
            if nothing_left(page).count():
                active.discard(name)
                continue
            page.get_by_role("button", name="Right is better").click()
            wait_selected(page, "choice_right")
        for name in sorted(active):
            pages[name].get_by_role("button", name="Submit").click()
        for name in sorted(active):
            page = pages[name]
            done[name] += 1
            wait_for_judgments_today(page, done[name])
            assert_no_app_exception(page)
    assert not active, "an annotator was still being given pairs"
    for page in pages.values():
        # A page that ran out earlier shows the progress of then; "Check again" updates it.
        page.get_by_role("button", name="Check again").click()
        page.get_by_text("Round 1: 3 of 3 judgments").wait_for()
        nothing_left(page).wait_for()

    with workspace.sessions() as session:
        pairs = session.scalars(select(Pair)).all()
        counts = {
            pair.id: session.query(Judgment)
            .filter(Judgment.pair_id == pair.id, Judgment.choice != "skip")
            .count()
            for pair in pairs
        }
        assert counts == dict.fromkeys(counts, 1), counts
        assert all(pair.judgment_count == 1 for pair in pairs)
    assert sum(done.values()) == 3
    assert min(done.values()) >= 1, done


# --- screenshots for the README -----------------------------------------------------

MOVIE_PAIRS = [
    (
        "This movie was",
        "a quiet surprise. The two leads have an easy chemistry, and the last twenty "
        "minutes earn every tear they ask for. I would happily watch it again.",
        "fine, I guess. Some scenes were good and some were not. The music was loud. "
        "It was a movie that I watched on a Tuesday.",
    ),
    ("The acting in this film", "is superb.", "was bad bad bad bad."),
    ("I expected more from", "the director.", "this cast."),
    ("The plot", "makes no sense.", "is clever."),
    ("The soundtrack", "is wonderful.", "is forgettable."),
    ("Halfway through,", "I fell asleep.", "I was hooked."),
    ("The ending", "was perfect.", "felt rushed."),
    ("Compared to the book,", "it is weaker.", "it is better."),
    ("My kids", "loved it.", "were bored."),
    ("Two hours later,", "I am still thinking about it.", "I want my money back."),
]
# Votes of alice, bob and carol per pair position, (choice, left sample) or None where
# one did not judge the pair; pairs 6 and 7 are gold with known answers B and A.
VOTES = {
    1: [("A", "A"), ("A", "B"), ("B", "A")],
    2: [("B", "B"), ("B", "A"), ("B", "B")],
    3: [("A", "A"), ("tie", "B"), ("A", "A")],
    4: [("B", "A"), ("B", "B"), None],
    5: [("A", "B"), ("skip", "A"), None],
    6: [("B", "A"), ("B", "B"), ("A", "A")],
    7: [("A", "B"), ("B", "A"), ("A", "B")],
}
GOLD = {6: "B", 7: "A"}


def test_screenshots_for_the_readme(app_db, new_page) -> None:
    names = ("alice", "bob", "carol")
    ids = [app_db.add_user(name) for name in names]
    app_db.add_user("lead", "lead")
    with transaction(app_db.sessions) as session:
        pairs = session.scalars(select(Pair).order_by(Pair.id)).all()
        for position, answer in GOLD.items():
            pairs[position].gold_choice = answer
        for position, votes in VOTES.items():
            for annotator_id, vote in zip(ids, votes, strict=True):
                if vote is None:
                    continue
                choice, left = vote
                record_judgment(
                    session,
                    annotator_id,
                    pairs[position].id,
                    choice=choice,
                    left_sample=left,
                    ms_spent=4000 + 1500 * position + 700 * annotator_id,
                )
        # The pair alice gets next (leased to her now, as her page would) is the one
        # with the prompt "This movie was"; the others get the other texts.
        shown_next = session.get(Pair, next_pair(session, ids[0]).pair_id)
        others = (pair for pair in pairs if pair is not shown_next)
        for pair, (prompt, a, b) in zip([shown_next, *others], MOVIE_PAIRS, strict=True):
            pair.prompt.text, pair.sample_a.text, pair.sample_b.text = prompt, a, b
    base = app_db.base_url
    DOCS.mkdir(exist_ok=True)

    page = new_page()
    log_in(page, base, "alice")
    assert wait_for_pair(page).prompt == MOVIE_PAIRS[0][0]
    page.get_by_text("Round 1: 12 of 24 judgments").wait_for()
    screenshot(page, DOCS / "annotate.png")

    lead = new_page()
    log_in(lead, base, "lead")
    lead.get_by_role("link", name="Quality").click()
    lead.get_by_role("heading", name="Annotators").wait_for()
    lead.locator('[data-testid="stDataFrame"]').first.wait_for()
    lead.locator('[data-testid="stDataFrame"]').nth(1).wait_for()
    charts = lead.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(1).wait_for()
    for index in range(charts.count()):
        charts.nth(index).locator("canvas, svg").first.wait_for()
    wait_idle(lead)
    assert_no_app_exception(lead)
    screenshot(lead, DOCS / "quality.png")
    for name in ("annotate.png", "quality.png"):
        assert (DOCS / name).stat().st_size > 10_000
