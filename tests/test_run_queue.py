"""The run queue on real databases: claims race safely, stale runs are failed with their
steps, cancel and retry follow their rules, retraining checks refuse with one sentence,
and a database that goes away for a moment costs a retry, not the run."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.engine import transaction
from db.errors import UserError
from db.models import Model, Pair, Prompt, Round, Sample, TrainingRun, utcnow
from db.retraining import enqueue_retraining
from db.runs import (
    beat,
    claim_next_run,
    claim_run,
    enqueue_run,
    mark_stale_runs,
    request_cancel,
    retry_run,
)
from rlhf_train.runs.heartbeat import Heartbeat
from rlhf_train.runs.record import RunLog, finish_run
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace
from tests.helpers import record_votes


def test_racing_workers_never_claim_the_same_run(workspace) -> None:
    with transaction(workspace.sessions) as session:
        ids = [enqueue_run(session, "round", {}, None).id for _ in range(24)]
    claims: dict[str, list[int]] = {}

    def work(name: str) -> None:
        mine = claims.setdefault(name, [])
        while True:
            with transaction(workspace.sessions) as session:
                run_id = claim_next_run(session, name)
            if run_id is None:
                return
            mine.append(run_id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = [run_id for mine in claims.values() for run_id in mine]
    assert sorted(taken) == ids  # each run exactly once
    with workspace.sessions() as session:
        rows = session.scalars(select(TrainingRun)).all()
        owner = {run_id: name for name, mine in claims.items() for run_id in mine}
        assert all(r.status == "running" and r.worker == owner[r.id] for r in rows)
        assert all(r.attempts == 1 for r in rows)
    with transaction(workspace.sessions) as session:
        assert not claim_run(session, ids[0], "late")  # no longer queued


def test_stale_runs_fail_with_their_steps_and_only_worker_held_ones(workspace) -> None:
    with transaction(workspace.sessions) as session:
        job = enqueue_run(session, "round", {}, None)
        claim_run(session, job.id, "w1")
        step = TrainingRun(kind="ppo", status="running", parent_id=job.id, heartbeat_at=utcnow())
        terminal = TrainingRun(kind="reward", status="running", heartbeat_at=utcnow())
        session.add_all([step, terminal])
        session.flush()
        ids = job.id, step.id, terminal.id
    later = utcnow() + timedelta(minutes=5)
    with transaction(workspace.sessions) as session:
        assert mark_stale_runs(session, timedelta(minutes=2), now=later) == [ids[0], ids[1]]
    with workspace.sessions() as session:
        job, step, terminal = (session.get(TrainingRun, i) for i in ids)
        assert job.status == step.status == "failed"
        assert f"rlhf runs retry {job.id}" in step.metrics["error"]
        # A `rlhf train` in a terminal has no worker; only its user knows whether it lives.
        assert terminal.status == "running"
    with transaction(workspace.sessions) as session:
        assert not beat(session, ids[0], "w1")  # the worker learns it lost the run


def test_the_heartbeat_stops_its_holder_only_when_another_has_the_run(workspace) -> None:
    """Ended by its own holder, a run is not "taken over": the holder is not interrupted
    in whatever it does next (a race a beat could hit right after the run's end)."""
    with transaction(workspace.sessions) as session:
        run_id = enqueue_run(session, "round", {}, None).id
        claim_run(session, run_id, "w1")
    stopped: list[str] = []
    heartbeat = Heartbeat(workspace, run_id, "w1", 60, on_cancel=lambda: stopped.append("cancel"))
    heartbeat.beat_once()
    assert stopped == [] and not heartbeat.lost

    # The holder records the end; the next beat must leave it alone.
    finish_run(workspace, run_id, "failed", {"error": "boom"})
    heartbeat.beat_once()
    assert stopped == [] and not heartbeat.lost

    # Retried and claimed by another worker: now it is taken over, and said once.
    with transaction(workspace.sessions) as session:
        retry_run(session, run_id)
        claim_run(session, run_id, "w2")
    heartbeat.beat_once()
    heartbeat.beat_once()
    assert stopped == ["cancel"] and heartbeat.lost  # on_lost defaults to on_cancel


def test_a_heartbeat_stops_a_holder_whose_run_was_queued_again(workspace) -> None:
    with transaction(workspace.sessions) as session:
        run_id = enqueue_run(session, "round", {}, None).id
        claim_run(session, run_id, "w1")
        # Marked failed by a stale sweep while w1 still works on it: not taken yet...
        mark_stale_runs(session, timedelta(minutes=2), now=utcnow() + timedelta(minutes=5))
    lost: list[bool] = []
    heartbeat = Heartbeat(workspace, run_id, "w1", 60, lambda: None, lambda: lost.append(True))
    heartbeat.beat_once()
    assert lost == []
    # ...but once a lead retries it, w1 must stop before another worker claims it.
    with transaction(workspace.sessions) as session:
        retry_run(session, run_id)
    heartbeat.beat_once()
    assert lost == [True]


def test_cancel_and_retry_follow_the_status(workspace) -> None:
    with transaction(workspace.sessions) as session:
        queued = enqueue_run(session, "round", {}, None).id
        running = enqueue_run(session, "round", {}, None).id
        claim_run(session, running, "w1")
        assert request_cancel(session, queued).status == "cancelled"
        assert request_cancel(session, running).cancel_requested
        assert session.get(TrainingRun, running).status == "running"
        with pytest.raises(UserError, match="only failed or cancelled runs can be retried"):
            retry_run(session, running)
        again = retry_run(session, queued)
        assert again.status == "queued" and not again.cancel_requested
        with pytest.raises(UserError, match="only queued or running runs can be cancelled"):
            finished = enqueue_run(session, "round", {}, None)
            finished.status = "succeeded"
            request_cancel(session, finished.id)
        step = TrainingRun(kind="reward", status="failed", parent_id=running)
        session.add(step)
        session.flush()
        with pytest.raises(UserError, match="retry the job instead"):
            retry_run(session, step.id)


def _round_with_pairs(workspace, pairs: int) -> None:
    with transaction(workspace.sessions) as session:
        policy = Model(kind="policy", name="p0", path="/p0")
        session.add(policy)
        session.flush()
        round_ = Round(number=1, policy_id=policy.id, overlap=3)
        session.add(round_)
        session.flush()
        for i in range(pairs):
            prompt = Prompt(text=f"p{i}", source="t", content_hash=f"{i:064d}")
            session.add(prompt)
            session.flush()
            samples = [
                Sample(prompt_id=prompt.id, policy_id=policy.id, round_id=round_.id, text=t,
                       seed=0, token_count=1, finished=True)
                for t in ("a", "b")
            ]  # fmt: skip
            session.add_all(samples)
            session.flush()
            session.add(
                Pair(round_id=round_.id, prompt_id=prompt.id, sample_a_id=samples[0].id,
                     sample_b_id=samples[1].id)
            )  # fmt: skip


def test_retraining_needs_new_judgments_and_refuses_a_second_job(workspace) -> None:
    _round_with_pairs(workspace, 3)
    with (
        pytest.raises(UserError, match="Round 1 has no judgments yet"),
        transaction(workspace.sessions) as session,
    ):
        enqueue_retraining(session, {}, None, min_judgments=1)
    record_votes(workspace, {0: [("a1", "A", 1), ("a2", "skip", None)], 1: [("a1", "B", 2)]})
    with (
        pytest.raises(UserError, match="has 2 judgments and retraining needs at least 5"),
        transaction(workspace.sessions) as session,
    ):
        enqueue_retraining(session, {}, None, min_judgments=5)
    with transaction(workspace.sessions) as session:
        job = enqueue_retraining(session, {"optimizer": "dpo"}, None, min_judgments=2)
        assert job.kind == "round" and job.round_id is not None and job.config["round"] == 1
    with (
        pytest.raises(UserError, match=f"Retraining run {job.id} is already queued"),
        transaction(workspace.sessions) as session,
    ):
        enqueue_retraining(session, {}, None, min_judgments=1)
    with transaction(workspace.sessions) as session:
        session.get(TrainingRun, job.id).status = "succeeded"
    with (
        pytest.raises(UserError, match="already trained from"),
        transaction(workspace.sessions) as session,
    ):
        enqueue_retraining(session, {}, None, min_judgments=1)


@pytest.mark.postgres
def test_a_briefly_unreachable_postgres_delays_the_outcome_but_does_not_lose_it(
    tmp_path, postgres_url, postgres_outage, capsys
) -> None:
    workspace = Workspace.open(tmp_path / "ws", {"database.url": postgres_url})
    init_workspace(workspace)
    with transaction(workspace.sessions) as session:
        run_id = enqueue_run(session, "reward", {}, None).id
    try:
        down = postgres_outage(2.5)
        # A progress write during the outage is skipped with a warning...
        RunLog(workspace, run_id, interval=0).progress(1, 2)
        # ...and the outcome is retried until the database is back.
        finish_run(workspace, run_id, "succeeded", {"loss": 0.5})
        down.join()
        err = capsys.readouterr().err
        assert "progress not recorded" in err and "trying again" in err
        with workspace.sessions() as session:
            run = session.get(TrainingRun, run_id)
            assert run.status == "succeeded" and run.metrics == {"loss": 0.5}
    finally:
        workspace.engine.dispose()
