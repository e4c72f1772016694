"""`rlhf rounds next` and `rlhf worker` on tiny models: the judgments of round 1 become a
promoted policy and an open round 2; a failure promotes nothing and a retry resumes.
Real generation, exports, reward training, PPO and evaluation; no mocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from annotate_app.progress_data import evaluation_points, report_samples
from db.engine import transaction
from db.models import Evaluation, Export, Model, Pair, Round, TrainingRun
from db.prompts import add_prompts
from db.registry import current_policy
from rlhf_train.cli import main
from rlhf_train.rounds.generate import generate_round, request_from_config
from rlhf_train.runs.summary import describe_run
from rlhf_train.runs.trainer_args import last_checkpoint
from rlhf_train.workspace import Workspace
from tests.helpers import loop_settings, processes_running, record_votes, rlhf, round_job
from tests.tiny_models import build_tiny_reward_backbone

PROMPTS = [f"The film number {i} was" for i in range(24)]


@pytest.fixture(scope="module")
def reward_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("loop-rm"))


@pytest.fixture
def loop_ws(tmp_path, db_url, tiny_policy, reward_backbone, monkeypatch) -> Workspace:
    """A workspace whose round 1 (8 pairs from the tiny policy) is fully judged."""
    monkeypatch.setenv("RLHF_DB_URL", db_url)
    for key, value in loop_settings(tiny_policy, reward_backbone).items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "ws"
    assert main(["--workspace", str(root), "init"]) == 0
    workspace = Workspace.open(root)
    with transaction(workspace.sessions) as session:
        add_prompts(
            session,
            PROMPTS,
            source="test",
            chat=False,
            split_of=lambda text: "eval" if text.endswith(("1 was", "7 was")) else "train",
        )
    generate_round(workspace, request_from_config(workspace, 1, None, None), progress=False)
    with workspace.sessions() as session:
        pairs = session.scalar(select(Pair.id).where(Pair.round_id == 1).limit(1))
        count = len(session.scalars(select(Pair.id)).all())
    assert pairs is not None
    # Annotators prefer A on even pairs and B on odd ones: learnable only as noise, but
    # a round's worth of real judgments through the app's function.
    record_votes(
        workspace,
        {i: [("ann", "A" if i % 2 == 0 else "B", 2)] for i in range(count)},
    )
    yield workspace
    workspace.engine.dispose()


def test_round_next_turns_round_1_into_a_promoted_policy_and_an_open_round_2(
    loop_ws, capsys
) -> None:
    with loop_ws.sessions() as session:
        first_policy = session.get(Round, 1).policy_id
    assert rlhf(loop_ws, "round", "next", "--no-progress") == 0
    out = capsys.readouterr().out
    assert "round 2 is open for annotation" in out

    job = round_job(loop_ws)
    assert job.status == "succeeded" and job.progress == 1.0
    steps = job.metrics["steps"]
    assert list(steps) == [
        "close",
        "export",
        "reward",
        "optimize",
        "evaluate",
        "promote",
        "generate",
    ]
    assert all(step["done"] for step in steps.values())
    with loop_ws.sessions() as session:
        rounds = {r.number: r for r in session.scalars(select(Round))}
        assert rounds[1].status == "closed" and rounds[2].status == "open"
        new = current_policy(session)
        assert new.name == "policy-r1" and new.parent_id == first_policy
        assert new.round_id == rounds[1].id
        assert rounds[2].policy_id == new.id and rounds[2].previous_policy_id == first_policy
        strategies = set(session.scalars(select(Pair.strategy).where(Pair.round_id == 2)))
        assert strategies <= {"random", "new_vs_previous"} and strategies
        # The trace: policy -> its PPO run -> the job -> the export -> round 1's judgments.
        ppo = session.get(TrainingRun, new.training_run_id)
        assert ppo.kind == "ppo" and ppo.parent_id == job.id and ppo.round_id == rounds[1].id
        reward = session.scalar(
            select(TrainingRun).where(TrainingRun.kind == "reward", TrainingRun.parent_id == job.id)
        )
        assert reward.status == "succeeded"
        export = session.get(Export, ppo.export_id)
        assert (
            export.filters["rounds"] == [1] and export.id == steps["export"]["outputs"]["export_id"]
        )
        evaluation = session.scalar(select(Evaluation))
        assert evaluation.policy_id == new.id and evaluation.against_id == first_policy
        assert evaluation.round_id == rounds[1].id
        assert (Path(evaluation.report_path) / "report.json").is_file()
        # The Progress page reads the figures the loop's evaluation wrote.
        point = evaluation_points(session)[-1]
        assert {"score_mean", "kl", "distinct_2", "against/score_mean"} <= set(point.figures)
        assert "reward_win_rate" in point.figures
        samples = report_samples(evaluation.report_path)
        assert len(samples) == 4 and all(pair.against_response is not None for pair in samples)
    log = [json.loads(line) for line in Path(job.log_path).read_text().splitlines()]
    assert [r["step"] for r in log if r.get("status") == "done"] == list(steps)

    assert rlhf(loop_ws, "models", "trace", "policy-r1") == 0
    trace = capsys.readouterr().out
    assert f"trained by ppo run {ppo.id} (succeeded), a step of retraining run {job.id}" in trace
    assert "learned from round 1" in trace and "round 1: 8 judgments" in trace
    assert "against reward model 'reward-r1'" in trace and "parent:" in trace

    # Nothing new was judged since: a second retraining is refused with one sentence.
    assert rlhf(loop_ws, "round", "next", "--round", "1") == 2
    assert "already trained from" in capsys.readouterr().err
    assert rlhf(loop_ws, "round", "next") == 2
    assert "Round 2 has no judgments yet" in capsys.readouterr().err

    # Annotators judge round 2, always for the new policy's sample where it meets the
    # previous one; when round 2 closes, their verdict joins policy-r1's evaluation.
    with transaction(loop_ws.sessions) as session:
        from db.judgments import record_judgment
        from db.users import create_user

        judge = create_user(session, "judge", "annotator", "password-123")
        versus = 0
        for pair in session.scalars(select(Pair).where(Pair.round_id == rounds[2].id)):
            choice = "A" if pair.sample_a.policy_id == new.id else "B"
            versus += pair.strategy == "new_vs_previous"
            record_judgment(session, judge.id, pair.id, choice=choice, left_sample="A")
    assert versus > 0
    assert rlhf(loop_ws, "round", "next", "--no-progress") == 0
    with loop_ws.sessions() as session:
        first = session.get(Evaluation, evaluation.id)
        assert first.metrics["annotator_win_rate"] == 1.0
        assert first.metrics["annotator_judgments"] == versus
        assert current_policy(session).name == "policy-r2"


def test_a_failed_step_promotes_nothing_and_a_retry_resumes_after_the_finished_steps(
    loop_ws, monkeypatch, capsys
) -> None:
    # A batch that the PPO minibatch does not divide: the optimize step fails.
    monkeypatch.setenv("RLHF_OPTIMIZE_BATCH_SIZE", "6")
    loop_ws = Workspace.open(loop_ws.root)
    with loop_ws.sessions() as session:
        before = current_policy(session)
        before_id = before.id if before is not None else None
    assert rlhf(loop_ws, "round", "next", "--no-progress") == 2
    assert "must be a multiple of ppo.minibatch_size" in capsys.readouterr().err
    job = round_job(loop_ws)
    assert job.status == "failed" and "minibatch" in job.metrics["error"]
    assert set(job.metrics["steps"]) == {"close", "export", "reward"}
    with loop_ws.sessions() as session:
        now = current_policy(session)
        assert (now.id if now is not None else None) == before_id  # nothing promoted
        assert session.scalar(select(Round).where(Round.number == 2)) is None
        reward_models = session.scalars(select(Model.id).where(Model.kind == "reward")).all()

    monkeypatch.setenv("RLHF_OPTIMIZE_BATCH_SIZE", "4")
    assert rlhf(loop_ws, "runs", "retry", str(job.id)) == 0
    assert rlhf(loop_ws, "worker", "--once") == 0
    out = capsys.readouterr().out
    assert "1 runs (1 succeeded" in out
    job = round_job(loop_ws)
    assert job.status == "succeeded" and job.attempts == 2
    with loop_ws.sessions() as session:
        # The reward step was not redone: still one reward model, now driving the policy.
        assert (
            session.scalars(select(Model.id).where(Model.kind == "reward")).all() == reward_models
        )
        assert current_policy(session).name == "policy-r1"
        assert session.scalar(select(Round.status).where(Round.number == 2)) == "open"
    text = (loop_ws.root / "logs" / f"run-{job.id}.log").read_text()
    assert "[round 1] optimize" in text and "[round 1] reward" not in text


def test_retraining_is_refused_without_judgments_or_below_the_minimum(
    sqlite_workspace, capsys, monkeypatch
) -> None:
    assert rlhf(sqlite_workspace, "round", "next") == 2
    assert "There is no round to retrain from" in capsys.readouterr().err


def _worker(workspace: Workspace) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_train.cli", "--workspace", str(workspace.root), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ),
    )


def _wait_for(condition, seconds: float = 240.0, explain=None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out" + (f":\n{explain()}" if explain else ""))
        time.sleep(0.2)


def _step_running(workspace: Workspace, kind: str) -> bool:
    with workspace.sessions() as session:
        run = session.scalar(
            select(TrainingRun).where(TrainingRun.kind == kind, TrainingRun.status == "running")
        )
        return run is not None and run.progress > 0


def test_cancel_stops_the_worker_run_and_a_killed_worker_is_marked_failed_then_resumed(
    loop_ws, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RLHF_OPTIMIZE_STEPS", "400")
    loop_ws = Workspace.open(loop_ws.root)
    assert rlhf(loop_ws, "round", "next", "--queue", "--no-progress") == 0
    job_id = round_job(loop_ws).id

    worker = _worker(loop_ws)
    try:
        _wait_for(lambda: _step_running(loop_ws, "ppo"))
        assert rlhf(loop_ws, "runs", "cancel", str(job_id)) == 0
        _wait_for(lambda: round_job(loop_ws).status != "running", 60)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    job = round_job(loop_ws)
    assert job.status == "cancelled"
    with loop_ws.sessions() as session:
        assert current_policy(session) is None or current_policy(session).name != "policy-r1"
        ppo = session.scalar(select(TrainingRun).where(TrainingRun.kind == "ppo"))
        assert ppo.status == "cancelled" and ppo.parent_id == job_id

    # Retried, then the worker and its child are killed outright mid-PPO: the job is left
    # running with a heartbeat that goes stale.
    assert rlhf(loop_ws, "runs", "retry", str(job_id)) == 0
    worker = _worker(loop_ws)
    _wait_for(
        lambda: _step_running(loop_ws, "ppo") and _checkpointed(loop_ws),
        explain=lambda: describe_run(loop_ws, job_id, 40),
    )
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert round_job(loop_ws).status == "running"

    monkeypatch.setenv("RLHF_WORKER_STALE_AFTER_SECONDS", "1")
    time.sleep(1.5)
    assert rlhf(loop_ws, "worker", "--once") == 0
    out = capsys.readouterr().out
    assert f"Run {job_id} had no heartbeat: marked failed" in out
    job = round_job(loop_ws)
    assert job.status == "failed" and "no heartbeat" in job.metrics["error"]

    # Retried; this time only the job's process dies (as under the OOM killer), while
    # its worker lives on and records the death.
    monkeypatch.setenv("RLHF_WORKER_STALE_AFTER_SECONDS", "120")
    assert rlhf(loop_ws, "runs", "retry", str(job_id)) == 0
    worker = _worker(loop_ws)
    try:
        _wait_for(
            lambda: _step_running(loop_ws, "ppo"), explain=lambda: describe_run(loop_ws, job_id)
        )
        killed_ppo = _running_id(loop_ws, "ppo")
        child = processes_running(f"{loop_ws.root} runs execute {job_id}")
        assert len(child) == 1
        os.kill(child[0], signal.SIGKILL)
        _wait_for(lambda: round_job(loop_ws).status == "failed", 60)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    job = round_job(loop_ws)
    assert "killed by signal 9" in job.metrics["error"]

    monkeypatch.setenv("RLHF_OPTIMIZE_STEPS", "4")
    assert rlhf(loop_ws, "runs", "retry", str(job_id)) == 0
    assert rlhf(loop_ws, "worker", "--once") == 0
    job = round_job(loop_ws)
    assert job.status == "succeeded" and job.attempts == 4, describe_run(loop_ws, job_id, 60)
    with loop_ws.sessions() as session:
        ppo = session.scalars(select(TrainingRun).where(TrainingRun.kind == "ppo")).all()
        # The killed PPO run resumed from its checkpoint rather than starting over.
        assert [run.id for run in ppo if run.status == "succeeded"] == [killed_ppo]
        assert current_policy(session).name == "policy-r1"


def _running_id(workspace: Workspace, kind: str) -> int:
    with workspace.sessions() as session:
        return session.scalar(
            select(TrainingRun.id).where(TrainingRun.kind == kind, TrainingRun.status == "running")
        )


def _checkpointed(workspace: Workspace) -> bool:
    runs = (workspace.root / "checkpoints").glob("run-*")
    return any(last_checkpoint(run) is not None for run in runs)
