"""The Progress page's Leaderboard section in a real browser: a judged round of
new_vs_previous pairs between two policies (and two side policies compared only with each
other), rated with intervals and vote counts; style control; names shown as text. Writes
docs/leaderboard.png."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.engine import transaction
from db.judgments import record_judgment
from db.models import Model, Pair, Prompt, Round, Sample
from tests.browser import assert_no_app_exception, log_in, require_chromium, screenshot, wait_idle
from tests.browser_fixtures import AppDb

require_chromium()

DOCS = Path(__file__).resolve().parents[1] / "docs"
OLD, NEW = "sft-base", "round-2 ppo *v2*"
SIDE = ("side-a", "side-b")  # compared with each other only: not placed


def _sample(session, prompt_id: int, policy: Model, round_id: int, words: int) -> Sample:
    sample = Sample(
        prompt_id=prompt_id,
        policy_id=policy.id,
        round_id=round_id,
        text=" ".join(["word"] * words),
        seed=0,
        token_count=words,
        finished=True,
    )
    session.add(sample)
    return sample


def _pair(
    session, round_id: int, prompt_id: int, a: Sample, b: Sample, strategy: str = "new_vs_previous"
) -> Pair:
    session.flush()
    pair = Pair(
        round_id=round_id,
        prompt_id=prompt_id,
        sample_a_id=a.id,
        sample_b_id=b.id,
        strategy=strategy,
    )
    session.add(pair)
    session.flush()
    return pair


def _judged_two_policy_round(app_db: AppDb) -> None:
    """Round 2: NEW against OLD on every prompt, the new policy on side A of every other
    pair; three annotators each, NEW winning 20 of 30 votes, 5 ties."""
    annotators = [app_db.add_user(f"ann{i}") for i in range(3)]
    with transaction(app_db.sessions) as session:
        old = Model(kind="policy", name=OLD, path="/m/old")
        session.add(old)
        session.flush()
        new = Model(kind="policy", name=NEW, path="/m/new", parent_id=old.id)
        side = [Model(kind="policy", name=name, path=f"/m/{name}") for name in SIDE]
        session.add_all([new, *side])
        session.flush()
        round_2 = Round(number=2, policy_id=new.id, previous_policy_id=old.id)
        session.add(round_2)
        session.flush()
        prompts = session.scalars(select(Prompt.id).order_by(Prompt.id)).all()
        for n, prompt in enumerate(prompts):
            ours = _sample(session, prompt, new, round_2.id, 8 + n)
            theirs = _sample(session, prompt, old, round_2.id, 12 - n % 4)
            new_is_a = n % 2 == 0
            pair = _pair(
                session, round_2.id, prompt, *((ours, theirs) if new_is_a else (theirs, ours))
            )
            won, lost = ("A", "B") if new_is_a else ("B", "A")
            for k, annotator in enumerate(annotators):
                choice = won if k < 2 else (lost if n % 2 else "tie")
                record_judgment(session, annotator, pair.id, choice=choice, left_sample="A")
        pair = _pair(
            session,
            round_2.id,
            prompts[0],
            _sample(session, prompts[0], side[0], round_2.id, 5),
            _sample(session, prompts[0], side[1], round_2.id, 6),
            strategy="random",
        )
        record_judgment(session, annotators[0], pair.id, choice="A", left_sample="B")


def _rows(page, key: str, columns: int) -> list[list[str]]:
    """The cells of the st.dataframe in the container `key`, row after row (from the
    grid's hidden accessible table: the grid itself is drawn on a canvas)."""
    frame = page.locator(f'.st-key-{key} [data-testid="stDataFrame"]')
    frame.locator('[role="gridcell"]').first.wait_for(state="attached")
    cells = frame.locator('[role="gridcell"]').all_text_contents()
    return [cells[start : start + columns] for start in range(0, len(cells), columns)]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_leaderboard_rates_both_policies_with_intervals_and_votes(app_db, new_page) -> None:
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    page.get_by_role("link", name="Progress").click()
    page.get_by_role("heading", name="Leaderboard").wait_for()
    # The template round has one policy: nothing to rate yet, in one sentence.
    page.get_by_text("There are no cross-policy votes to rate policies from").wait_for()

    _judged_two_policy_round(app_db)
    page.get_by_role("link", name="Progress").click()  # a rerun sees the votes
    section = page.locator(".st-key-leaderboard")
    section.locator('[data-testid="stVegaLiteChart"] :is(canvas, svg)').first.wait_for()
    rows = _rows(page, "leaderboard_table", 7)
    assert [row[1] for row in rows] == [NEW, OLD]  # best first, names exactly as typed
    for _rank, policy, rating, low, high, votes, _ in rows:
        assert _number(low) <= _number(rating) <= _number(high), policy
        assert votes == "30"
    assert _number(rows[1][2]) == 1000  # the starting policy is the anchor
    assert _number(rows[0][2]) > 1000 and rows[1][6] in ("", "None")
    assert 0.5 < _number(rows[0][6]) < 1
    assert f"Anchor (rating 1000): {OLD}. 30 votes" in section.inner_text()
    never = _rows(page, "never_compared", 2)
    assert [OLD, SIDE[0]] in never and [SIDE[0], SIDE[1]] not in never
    section.get_by_text(
        f"Not placed (no chain of votes connects them to the anchor): {SIDE[0]}, {SIDE[1]}"
    ).wait_for()
    # Names are text: the Markdown emphasis in NEW made no element.
    assert section.locator(":is(b, em, strong)").count() == 0
    wait_idle(page)
    assert_no_app_exception(page)
    DOCS.mkdir(exist_ok=True)
    screenshot(page, DOCS / "leaderboard.png")
    assert (DOCS / "leaderboard.png").stat().st_size > 10_000

    # Style control: the fit at equal length, with the fitted length effect.
    section.get_by_text("Style control").click()
    section.get_by_text("Length effect:").wait_for()
    styled = _rows(page, "leaderboard_table", 7)
    assert sorted(row[1] for row in styled) == sorted([NEW, OLD])
    assert all(row[5] == "30" for row in styled)
    assert_no_app_exception(page)
