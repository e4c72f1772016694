"""Eight annotators at once on one app server, in a real browser, on SQLite and
PostgreSQL: each submits by keyboard as soon as the pair is on screen, all pages at the
same time, until nothing is left. Every judgment lands, none twice, and no pair gets
more than its overlap."""

from __future__ import annotations

from sqlalchemy import func, select

from db.engine import transaction
from db.models import Judgment, Pair, Round
from db.users import create_user
from rlhf_train.rounds.generate import generate_round
from tests.browser import (
    PASSWORD,
    assert_no_app_exception,
    log_in,
    nothing_left,
    require_chromium,
    wait_for_judgments_today,
    wait_for_pair,
)
from tests.browser_fixtures import set_texts
from tests.helpers import round_request, store_prompts

require_chromium()

ANNOTATORS = 8
PAIRS, OVERLAP = 8, 2


def test_eight_annotators_at_once_store_every_judgment_once(
    workspace, tiny_policy, serve, new_page
) -> None:
    store_prompts(workspace, [f"Crowd prompt {i}." for i in range(PAIRS)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=PAIRS), False)
    names = [f"annotator{n}" for n in range(ANNOTATORS)]
    with transaction(workspace.sessions) as session:
        set_texts(session)
        session.scalar(select(Round)).overlap = OVERLAP
        for name in names:
            create_user(session, name, "annotator", PASSWORD)
    base = serve(workspace.db_url)
    pages = {name: new_page() for name in names}
    for name, page in pages.items():
        log_in(page, base, name)
    done = dict.fromkeys(names, 0)
    active = set(names)
    while active:
        ready = []
        for name in sorted(active):
            page = pages[name]
            response = page.locator('.st-key-right_response [data-testid="stText"]')
            nothing_left(page).or_(response).first.wait_for()
            if nothing_left(page).count():
                active.discard(name)
                continue
            wait_for_pair(page)
            ready.append(name)
        for name in ready:  # every page submits before any waits: the server sees a crowd
            pages[name].keyboard.press("1")
            pages[name].keyboard.press("Enter")
        for name in ready:
            done[name] += 1
            wait_for_judgments_today(pages[name], done[name])
            assert_no_app_exception(pages[name])
        assert sum(done.values()) <= PAIRS * OVERLAP, "more judgments than the round needs"

    with workspace.sessions() as session:
        rows = session.execute(select(Judgment.annotator_id, Judgment.pair_id)).all()
        stored = dict(session.execute(select(Pair.id, Pair.judgment_count)).all())
        counted = dict(
            session.execute(
                select(Judgment.pair_id, func.count(Judgment.id)).group_by(Judgment.pair_id)
            ).all()
        )
    assert len(rows) == len(set(rows)) == sum(done.values())  # every one landed, once
    assert counted == stored and set(stored.values()) == {OVERLAP}  # the round is done
