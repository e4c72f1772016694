"""The lead's pages in a real browser: user names shown as text, a database outage,
and the Rounds, Quality and Users pages' smaller promises.

The fixtures (server, browser, template database) are the ones of test_browser.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from annotate_app.plain import WORD_JOINER
from db.engine import transaction
from db.judgments import record_judgment
from db.models import Model, Pair, Round, User, utcnow
from db.users import create_user
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace
from tests.browser import (
    PASSWORD,
    assert_no_app_exception,
    log_in,
    require_chromium,
    wait_idle,
)
from tests.browser_fixtures import AppDb

require_chromium()

OUTAGE_SENTENCE = "The database is not answering; retrying"


def _cells(page, table: int = 0) -> list[str]:
    """The texts of a st.dataframe's cells, row after row (from the grid's accessible
    table, which is in the page but hidden: the grid itself is drawn on a canvas)."""
    frame = page.locator('[data-testid="stDataFrame"]').nth(table)
    frame.locator('[role="gridcell"]').first.wait_for(state="attached")
    return frame.locator('[role="gridcell"]').all_text_contents()


def _rows(page, columns: int, table: int = 0) -> list[list[str]]:
    cells = _cells(page, table)
    return [cells[start : start + columns] for start in range(0, len(cells), columns)]


def _open(page, link: str, heading: str | None = None) -> None:
    page.get_by_role("link", name=link).click()
    page.get_by_role("heading", name=heading or link).wait_for()
    wait_idle(page)


# --- names as text ------------------------------------------------------------------------


@pytest.fixture
def pixel() -> Iterator[tuple[str, list[str]]]:
    """A local web server that counts the requests it gets: (its URL, the paths asked)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            asked.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_user_names_are_shown_as_text_on_every_lead_page(app_db, new_page, pixel) -> None:
    url, asked = pixel
    name = f"![x]({url}/pixel) **b** <img src={url}/img>"
    lead_id = app_db.add_user(name, "lead")
    with transaction(app_db.sessions) as session:
        # A judgment, so that the name is in the Quality page's tables and charts too.
        pair_id = session.scalar(select(Pair.id).order_by(Pair.id).limit(1))
        record_judgment(session, lead_id, pair_id, choice="A", left_sample="A")
    page = new_page()
    log_in(page, app_db.base_url, name)  # waits for "Logged in as <name>", literally
    assert page.locator('[data-testid="stSidebar"] img').count() == 0

    for link in ("Rounds", "Quality", "Training runs", "Progress", "Users"):
        _open(page, link)
        assert_no_app_exception(page)
    # The Users page: the name in the table, and in the refusal that quotes it.
    assert name in _cells(page)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    page.get_by_role("button", name="Add user").click()
    alert = page.locator('[data-testid="stAlertContentError"]')
    alert.wait_for()
    # Literally, give or take the invisible word joiners that keep addresses from
    # becoming links (annotate_app/plain.py).
    shown = alert.inner_text().replace(WORD_JOINER, "")
    assert shown == f"A user named {name!r} already exists; pick another name."
    assert alert.locator("img, strong, a").count() == 0, alert.inner_html()
    wait_idle(page)
    time.sleep(0.5)  # time for a fetch the page might have started
    assert asked == []


# --- a database outage ----------------------------------------------------------------------


@pytest.mark.postgres
def test_a_database_outage_shows_one_sentence_and_the_page_recovers_by_itself(
    tmp_path: Path, postgres_url, postgres_outage, serve, new_page
) -> None:
    workspace = Workspace.open(tmp_path / "ws", {"database.url": postgres_url})
    init_workspace(workspace)
    with transaction(workspace.sessions) as session:
        create_user(session, "boss", "lead", PASSWORD)
    workspace.engine.dispose()
    base = serve(postgres_url)
    page = new_page()
    log_in(page, base, "boss")
    _open(page, "Users")

    down = postgres_outage(8)
    # A click during the outage: the sentence, no stack trace.
    page.get_by_role("link", name="Rounds").click()
    page.get_by_text(OUTAGE_SENTENCE).wait_for()
    assert_no_app_exception(page)
    # A reload during the outage (a new session that has only the cookie) too.
    page.reload()
    page.get_by_text(OUTAGE_SENTENCE).wait_for()
    assert_no_app_exception(page)
    down.join()

    # Back without a click or a reload, still logged in, on the page asked for.
    page.get_by_role("heading", name="Rounds").wait_for(timeout=30_000)
    page.get_by_text("Logged in as boss").wait_for()
    wait_idle(page)
    assert page.get_by_text(OUTAGE_SENTENCE).count() == 0
    assert_no_app_exception(page)


# --- Rounds, Quality, Users -----------------------------------------------------------------


def _add_round(app_db: AppDb, number: int, status: str) -> None:
    with transaction(app_db.sessions) as session:
        policy = session.scalar(select(Model.id).limit(1))
        session.add(Round(number=number, status=status, policy_id=policy, overlap=3))


def test_rounds_are_listed_newest_first_with_the_newest_chosen(app_db, new_page) -> None:
    _add_round(app_db, 2, "closed")
    _add_round(app_db, 3, "open")
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    _open(page, "Rounds")
    assert [row[0] for row in _rows(page, columns=11)] == ["3", "2", "1"]
    # The controls are those of the newest round, and another can be chosen.
    page.get_by_role("button", name="Close round 3").wait_for()
    assert page.get_by_role("button", name="Close round 1").count() == 0
    page.get_by_role("combobox", name="Round").click()
    page.get_by_role("option", name="Round 1 (open)").click()
    page.get_by_role("button", name="Close round 1").wait_for()
    assert_no_app_exception(page)


def test_quality_shows_a_dash_for_a_figure_not_computed_yet(app_db, new_page) -> None:
    ann = app_db.add_user("ann")
    app_db.add_user("boss", "lead")
    with transaction(app_db.sessions) as session:
        pair_id = session.scalar(select(Pair.id).order_by(Pair.id).limit(1))
        record_judgment(session, ann, pair_id, choice="A", left_sample="A")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    _open(page, "Quality")
    [annotator] = _rows(page, columns=8)
    assert annotator[:2] == ["ann", "1"]
    # No gold pair and nobody else's vote: gold accuracy and agreement are dashes.
    assert annotator[6:] == ["–", "–"]
    cells = _cells(page) + _cells(page, table=1)
    assert "None" not in cells and "" not in cells
    assert_no_app_exception(page)


def test_users_shows_a_lock_only_while_it_lasts(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    expired, locked = app_db.add_user("expired"), app_db.add_user("locked")
    with transaction(app_db.sessions) as session:
        session.get(User, expired).locked_until = utcnow() - timedelta(minutes=5)
        session.get(User, locked).locked_until = utcnow() + timedelta(minutes=10)
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    _open(page, "Users")
    rows = {row[0]: row[3] for row in _rows(page, columns=4)}
    assert rows["expired"] == "" and rows["boss"] == ""
    assert rows["locked"] != ""


def test_a_refused_new_user_keeps_what_was_typed(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    _open(page, "Users")
    name, password = (
        page.get_by_label("Name"),
        page.get_by_label("Password (at least 8 characters)"),
    )
    name.fill("carol")
    page.get_by_role("combobox", name="Role").click()
    page.get_by_role("option", name="lead").click()
    password.fill("short")
    page.get_by_role("button", name="Add user").click()
    page.get_by_text("The password is shorter than").wait_for()
    wait_idle(page)
    # The name and role stay; only the password is asked again.
    assert name.input_value() == "carol"
    assert page.get_by_role("combobox", name="Role").input_value() == "lead"
    assert password.input_value() == ""
    password.fill(PASSWORD)
    page.get_by_role("button", name="Add user").click()
    page.get_by_text("Added lead 'carol'.").wait_for()
    wait_idle(page)
    assert name.input_value() == ""
    with app_db.sessions() as session:
        assert session.scalar(select(User.role).where(User.name == "carol")) == "lead"
