"""A ranking task in a real browser (Chromium): four responses carrying marker texts,
ranked by keys typed fast (a tie and a Backspace among them) and by clicks; the
database must hold exactly the order chosen, in terms of the samples shown; an
incomplete order is refused with one sentence and stores nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from db.engine import make_engine, session_factory
from db.models import Judgment, Sample
from migrations.runner import upgrade
from tests.browser import (
    assert_no_app_exception,
    log_in,
    require_chromium,
    streamlit_server,
    wait_for_judgments_today,
    wait_for_keys,
    wait_idle,
)
from tests.browser_fixtures import AppDb
from tests.ranking_fixtures import ranking_round

require_chromium()

K = 4
RANK_BUTTONS = [*(f"rank_{n}" for n in range(1, K + 1)), "rank_tie", "rank_back", "submit"]
_BUTTONS_SHOWN = """
(keys) => keys.every((key) => document.querySelector(`.st-key-${key} button`) !== null)
"""


def _ranking_database(url: str):
    """A ranking round of 3 tasks of K marked responses (overlap 3: every annotator gets
    every task) in the empty database at `url`; its engine and sessions."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    ranking_round(sessions, k=K, tasks=3, overlap=3, annotators=0)
    with sessions.begin() as session:
        for sample in session.scalars(select(Sample)):
            sample.text = f"MARKER-{sample.id} says something"
    return engine, sessions


@pytest.fixture(scope="module")
def ranking_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppDb]:
    """One server on a SQLite database holding the ranking round."""
    folder = tmp_path_factory.mktemp("ranking-app")
    url = f"sqlite:///{folder / 'app.db'}"
    engine, sessions = _ranking_database(url)
    with streamlit_server(url, folder / "streamlit.log") as base_url:
        yield AppDb(url, sessions, base_url)
    engine.dispose()


def _wait_for_task(page) -> dict[int, int]:
    """Wait until a task is shown and its keys count; response number -> sample id, read
    from the marker texts on screen."""
    page.locator(f'.st-key-response_{K} [data-testid="stText"]').wait_for()
    wait_idle(page)
    page.wait_for_function(_BUTTONS_SHOWN, arg=RANK_BUTTONS)
    wait_for_keys(page)
    shown = {}
    for number in range(1, K + 1):
        text = page.locator(f'.st-key-response_{number} [data-testid="stText"]').inner_text()
        shown[number] = int(text.split()[0].removeprefix("MARKER-"))
    return shown


def _stored(app: AppDb, user_id: int) -> list[Judgment]:
    with app.sessions() as session:
        rows = session.scalars(
            select(Judgment).where(Judgment.annotator_id == user_id).order_by(Judgment.id)
        ).all()
        session.expunge_all()
        return list(rows)


def _as_ids(shown: dict[int, int], order: list[list[int]]) -> list[list[int]]:
    return [sorted(shown[n] for n in group) for group in order]


def test_keys_typed_fast_with_a_tie_and_a_backspace(ranking_app, new_page, tmp_path) -> None:
    _keyboard_ranking(ranking_app, new_page, tmp_path)


def test_keys_on_postgresql(postgres_url, serve, new_page, tmp_path) -> None:
    """The same ranking by keys, the app serving a PostgreSQL database."""
    engine, sessions = _ranking_database(postgres_url)
    try:
        _keyboard_ranking(AppDb(postgres_url, sessions, serve(postgres_url)), new_page, tmp_path)
    finally:
        engine.dispose()


def _keyboard_ranking(ranking_app: AppDb, new_page, tmp_path) -> None:
    user_id = ranking_app.add_user("ann")
    page = new_page()
    log_in(page, ranking_app.base_url, "ann")
    shown = _wait_for_task(page)
    body = page.locator("body")
    # 3 = 1, then 2 taken back by Backspace, then 4, 2: the order 3=1 > 4 > 2.
    body.press_sequentially("3=12", delay=15)
    page.keyboard.press("Backspace")
    body.press_sequentially("42", delay=15)
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 1)
    assert_no_app_exception(page)
    [first] = _stored(ranking_app, user_id)
    assert first.choice == "ranking"
    assert first.display_order == [shown[n] for n in range(1, K + 1)]
    assert first.ranking == _as_ids(shown, [[3, 1], [4], [2]])
    assert first.ms_spent > 0

    # Enter with an incomplete order: one sentence, nothing stored, the order kept.
    shown = _wait_for_task(page)
    body.press_sequentially("2", delay=15)
    page.keyboard.press("Enter")
    page.get_by_text(f"Place all {K} responses before submitting").wait_for()
    assert len(_stored(ranking_app, user_id)) == 1
    wait_for_keys(page)
    body.press_sequentially("143", delay=15)
    page.locator(".st-key-rank_order").get_by_text("2 > 1 > 4 > 3").wait_for()
    page.screenshot(path=str(tmp_path / "ranking.png"))
    page.keyboard.press("Enter")
    wait_for_judgments_today(page, 2)
    second = _stored(ranking_app, user_id)[-1]
    assert second.ranking == _as_ids(shown, [[2], [1], [4], [3]])


def test_clicks_rank_flag_and_submit(ranking_app, new_page) -> None:
    user_id = ranking_app.add_user("bob")
    page = new_page()
    log_in(page, ranking_app.base_url, "bob")
    shown = _wait_for_task(page)
    for key in ("rank_4", "rank_2", "rank_tie", "rank_1", "rank_3", "rank_back", "rank_3"):
        page.locator(f".st-key-{key} button").click()
    page.locator(".st-key-rank_order").get_by_text("4 > 2 = 1 > 3").wait_for()
    page.get_by_text("Broken").nth(1).click()  # response 2's "Broken" flag
    wait_idle(page)
    page.locator(".st-key-submit button").click()
    wait_for_judgments_today(page, 1)
    assert_no_app_exception(page)
    [row] = _stored(ranking_app, user_id)
    assert row.ranking == _as_ids(shown, [[4], [2, 1], [3]])
    assert row.flags == {"broken": [shown[2]]}


def _rank_one(app: AppDb, user_id: int) -> None:
    from db.engine import transaction
    from db.judgments import next_pair, record_judgment

    with transaction(app.sessions) as session:
        task = next_pair(session, user_id)
        shown = [sample for sample, _text in task.responses]
        record_judgment(
            session,
            user_id,
            task.pair_id,
            choice="ranking",
            left_sample="A",
            ranking=[[sample] for sample in sorted(shown)],
            display_order=shown,
        )


def test_lead_sees_the_kind_sets_a_gold_order_and_reads_tau(ranking_app, new_page) -> None:
    from db.models import Pair

    _rank_one(ranking_app, ranking_app.add_user("carl"))
    _rank_one(ranking_app, ranking_app.add_user("dana"))
    _, page = ranking_app.logged_in(new_page, "boss", "lead")
    page.get_by_role("link", name="Rounds").click()
    page.get_by_role("heading", name="Rounds").wait_for()
    wait_idle(page)
    page.locator('[data-testid="stDataFrame"] [role="gridcell"]').first.wait_for(state="attached")
    cells = page.locator('[data-testid="stDataFrame"]').first.locator('[role="gridcell"]')
    assert f"ranking, K={K}" in cells.all_text_contents()
    # Task #1's known best is sample 2 (a typo first: one sentence, nothing saved).
    field = page.get_by_label("Known order", exact=False)
    field.fill("2 > x")
    page.get_by_role("button", name="Save gold order").click()
    page.get_by_text("is not an order").wait_for()
    field.fill("2")
    page.get_by_role("button", name="Save gold order").click()
    page.get_by_text("Task #1 saved.").wait_for()
    with ranking_app.sessions() as session:
        pair = session.get(Pair, 1)
        assert (pair.gold_choice, pair.gold_ranking) == ("ranking", [[2]])
    page.get_by_role("link", name="Quality").click()
    page.get_by_role("heading", name="Rankings").wait_for()
    wait_idle(page)
    assert_no_app_exception(page)
