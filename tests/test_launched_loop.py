"""A retraining job whose reward, optimize, evaluate and generate steps run under
`[worker] launcher` in two CPU processes (gloo, accelerate's torchrun launcher), run by
the real worker on tiny models: one reward model and one policy, the ranks' weights equal,
the next round's prompts once each; a cancel stops every rank; a rank killed mid-PPO fails
the job naming it, and a retry resumes to what an uninterrupted job gives.

The launcher runs a small script of this test instead of `-m rlhf_train.cli` directly: it
strips the `-m rlhf_train.cli` the job appends, records each rank's trained weights, and,
when asked, has rank 1 SIGKILLed right after its first PPO checkpoint (the same death as a
kill from outside, at a step the test can rely on). Nothing else is changed.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select
from transformers import AutoModelForCausalLM

from db.engine import transaction
from db.models import Model, Pair, Round, Sample, TrainingRun
from db.prompts import add_prompts
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.loop.launcher import check_workspace_launcher, parse_launcher
from rlhf_train.rounds.generate import generate_round, request_from_config
from rlhf_train.runs.summary import describe_run
from rlhf_train.workspace import Workspace
from tests.helpers import loop_settings, processes_running, record_votes, rlhf, round_job
from tests.tiny_models import build_tiny_reward_backbone

PROMPTS = [f"The film number {i} was" for i in range(24)]
NEXT_PROMPTS = 8
RECORDER = """
import os
import signal
import sys
from pathlib import Path

import torch
from accelerate import PartialState

import rlhf_train.policy.optimize as optimize
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.policy.ppo import PPOTrainer

folder = Path(os.environ["LAUNCH_TEST_FOLDER"])
argv = sys.argv[1:]
assert argv[:2] == ["-m", "rlhf_train.cli"], argv
algorithm_named = optimize._algorithm


def recording(name):
    algorithm = algorithm_named(name)

    def run(job):
        trained, metrics = algorithm(job)
        weights = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
        state = PartialState()
        torch.save(
            {"world": state.num_processes, "weights": weights},
            folder / f"weights-{state.process_index}.pt",
        )
        return trained, metrics

    return run


saving = PPOTrainer.save_checkpoint


def save_then_die(self, checkpoint):
    saving(self, checkpoint)
    marker = folder / "killed"
    if os.environ.get("LAUNCH_TEST_KILL") and os.environ["RANK"] == "1" and not marker.exists():
        marker.write_text(checkpoint)
        os.kill(os.getpid(), signal.SIGKILL)


optimize._algorithm = recording
PPOTrainer.save_checkpoint = save_then_die
sys.exit(main(argv[2:]))
"""


@pytest.fixture(scope="module")
def reward_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("launch-rm"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launcher(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "record.py"
    script.write_text(RECORDER, encoding="utf-8")
    # --multi_gpu picks accelerate's torchrun launcher; without GPUs the ranks form a
    # gloo group on the CPU (docs/configuration.md).
    return (
        "accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no "
        f"--dynamo_backend no --main_process_port {_free_port()} {script}"
    )


def _judged_workspace(
    root: Path, monkeypatch, tiny_policy: Path, reward_backbone: Path
) -> Workspace:
    """A SQLite workspace with the launcher set and round 1 (8 pairs) judged."""
    for key, value in loop_settings(tiny_policy, reward_backbone).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RLHF_LOOP_NEXT_PROMPTS", str(NEXT_PROMPTS))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LAUNCH_TEST_FOLDER", str(root.parent))
    monkeypatch.setenv("RLHF_WORKER_LAUNCHER", _launcher(root.parent))
    assert main(["--workspace", str(root), "init"]) == 0
    workspace = Workspace.open(root)
    with transaction(workspace.sessions) as session:
        add_prompts(session, PROMPTS, source="test", chat=False, split_of=lambda text: "train")
    generate_round(workspace, request_from_config(workspace, 1, None, None), progress=False)
    with workspace.sessions() as session:
        count = session.scalar(select(func.count(Pair.id)))
    record_votes(workspace, {i: [("ann", "A" if i % 2 == 0 else "B", 2)] for i in range(count)})
    return workspace


def _queue_and_work(workspace: Workspace) -> TrainingRun:
    assert rlhf(workspace, "round", "next", "--queue", "--no-progress") == 0
    assert rlhf(workspace, "worker", "--once") == 0
    return round_job(workspace)


def _rank_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The policy both ranks ended with, checked equal; it is what was published."""
    ranks = [torch.load(folder / f"weights-{rank}.pt") for rank in (0, 1)]
    assert [record["world"] for record in ranks] == [2, 2]
    first, second = (record["weights"] for record in ranks)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    return first


def _check_outcome(workspace: Workspace, job: TrainingRun) -> dict[str, torch.Tensor]:
    explain = describe_run(workspace, job.id, 60)
    assert job.status == "succeeded", explain
    assert job.metrics["processes"] == 2
    steps = job.metrics["steps"]
    assert {name: steps[name]["processes"] for name in steps} == {
        "close": 1,
        "export": 1,
        "reward": 2,
        "optimize": 2,
        "evaluate": 2,
        "promote": 1,
        "generate": 2,
    }
    with workspace.sessions() as session:
        rewards = session.scalars(select(Model).where(Model.kind == "reward")).all()
        trained = session.scalars(
            select(Model).where(Model.kind == "policy", Model.training_run_id.is_not(None))
        ).all()
        assert [model.name for model in rewards] == ["reward-r1"]
        assert [model.name for model in trained] == ["policy-r1"]
        for kind in ("reward", "ppo"):
            run = session.scalars(
                select(TrainingRun).where(
                    TrainingRun.kind == kind, TrainingRun.status == "succeeded"
                )
            ).one()
            assert run.metrics["processes"] == 2 and run.parent_id == job.id
        # Round 2: every prompt once, each with all its samples, none from two ranks.
        round_2 = session.scalar(select(Round).where(Round.number == 2))
        pairs = session.scalars(select(Pair).where(Pair.round_id == round_2.id)).all()
        prompts = {pair.prompt_id for pair in pairs}
        assert len(prompts) == NEXT_PROMPTS
        sampled = session.execute(
            select(Sample.prompt_id, func.count(Sample.id))
            .where(Sample.prompt_id.in_(prompts), Sample.policy_id.in_([trained[0].id]))
            .group_by(Sample.prompt_id)
        ).all()
        assert len(sampled) == NEXT_PROMPTS
        published = AutoModelForCausalLM.from_pretrained(trained[0].path).state_dict()
    weights = _rank_weights(workspace.root.parent)
    assert all(torch.equal(published[key], weights[key]) for key in weights)
    assert "processes: 2" in describe_run(workspace, job.id)
    return weights


def test_a_launched_job_succeeds_and_a_killed_rank_resumes_to_the_same_result(
    tmp_path, monkeypatch, tiny_policy, reward_backbone, capsys
) -> None:
    straight = _judged_workspace(tmp_path / "a" / "ws", monkeypatch, tiny_policy, reward_backbone)
    expected = _check_outcome(straight, _queue_and_work(straight))
    straight.engine.dispose()

    killed = _judged_workspace(tmp_path / "b" / "ws", monkeypatch, tiny_policy, reward_backbone)
    monkeypatch.setenv("LAUNCH_TEST_KILL", "1")
    job = _queue_and_work(killed)
    assert job.status == "failed", describe_run(killed, job.id, 60)
    error = job.metrics["error"]
    assert "Rank 1 of step optimize" in error and "SIGKILL (exit code -9)" in error, error
    assert set(job.metrics["steps"]) == {"close", "export", "reward"}
    with killed.sessions() as session:
        ppo = session.scalars(select(TrainingRun).where(TrainingRun.kind == "ppo")).one()
        assert ppo.status == "failed" and ppo.metrics["processes"] == 2
        assert session.scalar(select(Round).where(Round.number == 2)) is None
    assert not processes_running(f"{killed.root} runs step {job.id}")

    assert rlhf(killed, "runs", "retry", str(job.id)) == 0
    assert rlhf(killed, "worker", "--once") == 0
    job = round_job(killed)
    resumed = _check_outcome(killed, job)
    assert job.attempts == 2
    with killed.sessions() as session:
        # The PPO run that lost its rank resumed from its checkpoint, not from scratch.
        runs = session.scalars(select(TrainingRun).where(TrainingRun.kind == "ppo")).all()
        assert [(run.id, run.status) for run in runs] == [(ppo.id, "succeeded")]
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[key], expected[key]) for key in expected)
    killed.engine.dispose()


def test_cancel_mid_step_stops_every_rank(tmp_path, monkeypatch, tiny_policy, reward_backbone):
    workspace = _judged_workspace(tmp_path / "ws", monkeypatch, tiny_policy, reward_backbone)
    monkeypatch.setenv("RLHF_OPTIMIZE_STEPS", "400")
    workspace = Workspace.open(workspace.root)
    assert rlhf(workspace, "round", "next", "--queue", "--no-progress") == 0
    job_id = round_job(workspace).id
    worker = _start_worker(workspace)
    try:
        _wait_for(
            lambda: _ppo_progress(workspace) > 0, explain=lambda: describe_run(workspace, job_id)
        )
        ranks = processes_running(f"{workspace.root} runs step {job_id} optimize")
        assert len(ranks) >= 2  # two ranks (and the launcher, whose command line holds it too)
        assert rlhf(workspace, "runs", "cancel", str(job_id)) == 0
        _wait_for(lambda: round_job(workspace).status != "running", 90)
        _wait_for(lambda: not processes_running(f"{workspace.root} runs step {job_id}"), 30)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert round_job(workspace).status == "cancelled"
    with workspace.sessions() as session:
        ppo = session.scalars(select(TrainingRun).where(TrainingRun.kind == "ppo")).one()
        assert ppo.status == "cancelled"
    workspace.engine.dispose()


def test_a_launcher_that_cannot_start_is_refused_before_queueing(
    sqlite_workspace, monkeypatch, capsys
) -> None:
    root = sqlite_workspace.root
    (root / "broken.yaml").write_text("num_processes: [2\n", encoding="utf-8")
    (root / "zero2.yaml").write_text("distributed_type: DEEPSPEED\nnum_processes: 4\n")
    refused = {
        "no-such-launcher --num_processes 2": "'no-such-launcher', which is not installed here",
        "accelerate launch --config_file missing.yaml": "does not exist",
        "accelerate launch --config_file broken.yaml": "cannot be read",
        "torchrun --nproc_per_node 'two": "is not a command line",
        "accelerate launch --num_processes": "no value after it",
    }
    for launcher, message in refused.items():
        monkeypatch.setenv("RLHF_WORKER_LAUNCHER", launcher)
        assert rlhf(Workspace.open(root), "round", "next", "--queue") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        with pytest.raises(UserError, match=message):  # what the app's button checks
            check_workspace_launcher(root)
    with sqlite_workspace.sessions() as session:
        assert session.scalar(select(func.count(TrainingRun.id))) == 0

    # What a good launcher becomes: this interpreter's accelerate, the file's count.
    good = parse_launcher("accelerate launch --config_file zero2.yaml --multi_gpu", root)
    assert good.words[:3] == (sys.executable, "-m", "accelerate.commands.launch")
    assert str(root / "zero2.yaml") in good.words and good.processes == 4
    assert parse_launcher("torchrun --nnodes 2 --nproc_per_node 8", root).processes == 16
    assert parse_launcher("", root) is None


def _start_worker(workspace: Workspace):
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "rlhf_train.cli", "--workspace", str(workspace.root), "worker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ),
    )


def _ppo_progress(workspace: Workspace) -> float:
    with workspace.sessions() as session:
        run = session.scalar(
            select(TrainingRun).where(TrainingRun.kind == "ppo", TrainingRun.status == "running")
        )
        return run.progress if run is not None else 0.0


def _wait_for(condition, seconds: float = 240.0, explain=None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out" + (f":\n{explain()}" if explain else ""))
        time.sleep(0.3)
