"""The lead's Training runs and Progress pages in a real browser: the database state is
built with our db functions, the pages are driven as a lead drives them.

The fixtures (server, browser, template database) are the ones of test_browser.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import select

from db.engine import transaction
from db.evaluations import add_evaluation
from db.judgments import record_judgment
from db.models import Model, Pair, Round, TrainingRun, utcnow
from tests.browser import (
    assert_no_app_exception,
    go,
    log_in,
    poll,
    require_chromium,
    wait_idle,
)
from tests.browser_fixtures import AppDb

require_chromium()

HOSTILE_LOG = "<b>x</b>\n<script>window.__pwned=1</script>\n"


def _open_as_lead(app_db: AppDb, new_page, link: str):
    app_db.add_user("boss", "lead")
    page = new_page()
    log_in(page, app_db.base_url, "boss")
    page.get_by_role("link", name=link).click()
    page.get_by_role("heading", name=link).wait_for()
    wait_idle(page)
    return page


def _add_run(app_db: AppDb, **fields) -> int:
    with transaction(app_db.sessions) as session:
        run = TrainingRun(**fields)
        session.add(run)
        session.flush()
        return run.id


def _run(app_db: AppDb, run_id: int) -> TrainingRun:
    with app_db.sessions() as session:
        run = session.get(TrainingRun, run_id)
        session.expunge(run)
        return run


def _choose(page, select: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `select`."""
    box = page.get_by_role("combobox", name=select, exact=True)
    # Scrolled into view first: a scroll closes the open list again.
    box.scroll_into_view_if_needed()
    box.click()
    page.get_by_role("option", name=option).click()
    wait_idle(page)


# --- Training runs ----------------------------------------------------------------------


def test_start_retraining_says_why_not_then_queues_a_round_job(app_db, new_page) -> None:
    page = _open_as_lead(app_db, new_page, "Training runs")
    page.get_by_text("No training runs yet.").wait_for()

    # Round 1 has no judgments: the sentence says so, and nothing is queued.
    page.get_by_role("button", name="Start retraining").click()
    page.get_by_text("Round 1 has no judgments yet").wait_for()
    with app_db.sessions() as session:
        assert session.scalars(select(TrainingRun)).all() == []

    annotator = app_db.add_user("ann")
    with transaction(app_db.sessions) as session:
        pair_id = session.scalar(select(Pair.id).order_by(Pair.id).limit(1))
        record_judgment(session, annotator, pair_id, choice="A", left_sample="A", ms_spent=900)
    page.get_by_role("combobox", name="Optimizer").click()
    page.get_by_role("option", name="dpo").click()
    page.get_by_label("Notes (optional)").fill("first try")
    page.get_by_role("button", name="Start retraining").click()
    page.get_by_text("Queued retraining run #").wait_for()
    with app_db.sessions() as session:
        [run] = session.scalars(select(TrainingRun)).all()
        assert (run.kind, run.status) == ("round", "queued")
        assert run.config == {
            "optimizer": "dpo",
            "notes": "first try",
            "requested_in": "app",
            "round": 1,
        }
    assert (
        f"Queued retraining run #{run.id} (round 1, dpo)"
        in page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
    )
    assert "rlhf worker" in page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
    # The new job is in the table and the detail at once.
    page.get_by_role("heading", name=f"Run #{run.id} · round").wait_for()
    assert_no_app_exception(page)


def test_a_running_job_shows_steps_curves_and_its_output_as_text_live(
    app_db, new_page, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    job_id = _add_run(
        app_db,
        kind="round",
        status="running",
        progress=0.3,
        attempts=1,
        worker="host:1",
        heartbeat_at=utcnow(),
        log_path=str(logs / "run-job.jsonl"),
        metrics={
            "current_step": "ppo",
            "steps": {"reward": {"status": "succeeded", "accuracy": 0.75}, "ppo": {}},
        },
    )
    step_log = logs / "run-step.jsonl"
    step_log.write_text(
        "".join(
            json.dumps({"step": step, "score_mean": step / 10, "kl": step / 100}) + "\n"
            for step in range(1, 6)
        )
        + json.dumps({"step": 5, "samples": [{"prompt": "p", "response": "r"}]})
        + "\n"
    )
    step_id = _add_run(
        app_db, kind="ppo", status="running", parent_id=job_id, log_path=str(step_log)
    )
    (logs / "run-job.log").write_text("".join(f"old line {i}\n" for i in range(60)) + HOSTILE_LOG)

    page = _open_as_lead(app_db, new_page, "Training runs")
    page.get_by_role("heading", name=f"Run #{job_id} · round").wait_for()
    page.get_by_text("30% done").wait_for()
    page.get_by_text(f"Step run #{step_id} · ppo · running").wait_for()
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(1).wait_for()  # reward and KL of the step run
    charts.first.locator("canvas, svg").first.wait_for()
    steps = page.locator('[data-testid="stDataFrame"]').nth(1)
    steps.wait_for()

    # The output's last 40 lines, as text: the markup shows, nothing is made of it.
    code = page.locator('[data-testid="stCode"]')
    code.get_by_text("<b>x</b>").wait_for()
    tail = code.inner_text()
    assert "<script>window.__pwned=1</script>" in tail
    assert "old line 59" in tail and "old line 22" in tail and "old line 21" not in tail
    assert code.locator("b, script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"

    # The worker moves on: the page follows by itself, no click, no reload, and what
    # the lead was typing in the form stays.
    notes = page.get_by_label("Notes (optional)")
    notes.fill("typed while watching")
    with transaction(app_db.sessions) as session:
        session.get(TrainingRun, job_id).progress = 0.7
    with (logs / "run-job.log").open("a") as log:
        log.write("reward model saved\n")
    page.get_by_text("70% done").wait_for()
    code.get_by_text("reward model saved").wait_for()
    assert notes.input_value() == "typed while watching"

    # When nothing runs any more, the page stops refreshing and offers a button instead.
    with transaction(app_db.sessions) as session:
        for run_id in (job_id, step_id):
            run = session.get(TrainingRun, run_id)
            run.status, run.progress = "succeeded", 1.0
    page.get_by_text("100% done").wait_for()
    page.get_by_role("button", name="Refresh").wait_for()
    assert notes.input_value() == "typed while watching"
    assert_no_app_exception(page)


def test_cancel_a_running_run_and_retry_a_failed_one(app_db, new_page) -> None:
    failed = _add_run(
        app_db,
        kind="reward",
        status="failed",
        attempts=1,
        metrics={"error": "CUDA out of memory <b>boom</b>"},
    )
    running = _add_run(app_db, kind="ppo", status="running", attempts=1, heartbeat_at=utcnow())
    page = _open_as_lead(app_db, new_page, "Training runs")
    page.get_by_role("heading", name=f"Run #{running} · ppo").wait_for()

    page.get_by_role("button", name="Cancel run").click()
    poll(lambda: _run(app_db, running).cancel_requested)
    page.get_by_text("Cancel requested: the worker stops the run").wait_for()
    page.get_by_text(f"Cancel of run #{running} requested.").wait_for()
    assert _run(app_db, running).status == "running"  # the worker stops it, not the page
    assert page.get_by_role("button", name="Cancel run").count() == 0

    _choose(page, "Run", f"#{failed} reward")
    page.get_by_role("heading", name=f"Run #{failed} · reward").wait_for()
    # The notice belongs to the run it was about.
    page.get_by_text(f"Cancel of run #{running} requested.").wait_for(state="detached")
    page.locator('[data-testid="stCode"]').get_by_text("CUDA out of memory <b>boom</b>").wait_for()
    page.get_by_role("button", name="Retry run").click()
    poll(lambda: _run(app_db, failed).status == "queued")
    notice = page.get_by_text(f"Run #{failed} is queued again.")
    notice.wait_for()
    # The page redraws itself every 2 s while runs are active; the notice outlives two.
    time.sleep(5)
    assert notice.is_visible()
    assert_no_app_exception(page)


# --- Progress ---------------------------------------------------------------------------

SAMPLES = [
    {
        "prompt": "The movie was",
        "policy_response": "a delight from start to finish.",
        "against_response": "boring <b>and</b> long.",
        "policy_score": 0.91,
        "against_score": -0.4,
    },
    {
        "prompt": "<script>window.__pwned=1</script>",
        "policy_response": "![x](http://example.invalid/a.png)",
        "against_response": None,
        "policy_score": 0.2,
        "against_score": None,
    },
]


def test_progress_shows_curves_and_samples_side_by_side_to_leads_only(
    app_db, new_page, tmp_path: Path
) -> None:
    page = _open_as_lead(app_db, new_page, "Progress")
    page.get_by_text("No evaluations yet.").wait_for()

    report = tmp_path / "report-2"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"metrics": {}, "samples": SAMPLES}))
    with transaction(app_db.sessions) as session:
        first = Model(kind="policy", name="policy-r1", path="/m/1")
        second = Model(kind="policy", name="policy-r2", path="/m/2")
        round_2 = Round(number=2)
        session.add_all([first, second, round_2])
        session.flush()
        round_1 = session.scalar(select(Round.id).where(Round.number == 1))
        add_evaluation(
            session,
            policy_id=first.id,
            round_id=round_1,
            metrics={"score_mean": 0.1, "kl": 0.0, "distinct_2": 0.8, "response_length": 30},
            report_path=str(tmp_path / "report-1"),  # never written: no samples
        )
        add_evaluation(
            session,
            policy_id=second.id,
            against_id=first.id,
            round_id=round_2.id,
            metrics={
                "policy": {"score_mean": 0.6, "kl": 2.5, "distinct_2": 0.7, "response_length": 28},
                "against": {"score_mean": 0.1},
                "reward_win_rate": 0.8,
            },
            report_path=str(report),
        )
    page.get_by_role("link", name="Progress").click()  # a rerun shows them
    for title in ("Reward score", "KL to the reference (nats)", "Diversity", "Win rates"):
        page.get_by_role("heading", name=title).wait_for()
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.nth(4).wait_for()
    charts.first.locator("canvas, svg").first.wait_for()

    # The newest evaluation is chosen: old and new response for the same prompt, as text.
    page.locator(".st-key-sample_0_policy").get_by_text(SAMPLES[0]["policy_response"]).wait_for()

    def text(key: str) -> str:
        return page.locator(f'.st-key-{key} [data-testid="stText"]').last.inner_text()

    assert text("sample_0_prompt") == "The movie was"
    assert text("sample_0_against") == "boring <b>and</b> long."
    assert text("sample_0_policy") == "a delight from start to finish."
    assert "policy-r1 (score -0.400)" in page.locator(".st-key-sample_0_against").inner_text()
    assert "policy-r2 (score 0.910)" in page.locator(".st-key-sample_0_policy").inner_text()
    assert text("sample_1_prompt") == SAMPLES[1]["prompt"]
    assert text("sample_1_policy") == SAMPLES[1]["policy_response"]
    assert page.locator('[class*="st-key-sample_"] :is(b, img, script)').count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"

    # The older evaluation's report folder was never written: no samples, no error.
    _choose(page, "Evaluation", "#1: policy-r1 (round 1)")
    page.get_by_text("No samples in this evaluation's report").wait_for()
    assert_no_app_exception(page)

    # An annotator has no Progress page, in the navigation or by URL.
    app_db.add_user("ann")
    other = new_page()
    go(other, app_db.base_url)
    log_in(other, app_db.base_url, "ann", path="/progress")
    other.get_by_role("heading", name="Annotate").wait_for()
    assert other.get_by_role("link", name="Progress").count() == 0
    assert other.get_by_role("heading", name="Progress").count() == 0
    assert other.get_by_text("Samples side by side").count() == 0
