"""`rlhf train` under `accelerate launch` with two CPU processes (gloo): the replicas end
with the same weights, and the workspace gets one run and one policy, not one per process.

Each process runs the real CLI through a small launcher script written here. It adds two
records and changes nothing else: the weights the algorithm returned in every process
(optimize_policy hands them back only in the main one), and whether the process group is
still up once the command has returned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from transformers import AutoModelForCausalLM

from db.models import Model, TrainingRun
from rlhf_train.cli import main
from rlhf_train.workspace import Workspace
from tests.test_optimize_trl import VOWEL_REWARD, make_export

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "RLHF_OPTIMIZE_BATCH_SIZE": "4",
    "RLHF_OPTIMIZE_MAX_NEW_TOKENS": "8",
    "RLHF_OPTIMIZE_LEARNING_RATE": "0.01",
    "RLHF_PPO_MINIBATCH_SIZE": "2",
    "RLHF_GROUP_NUM_GENERATIONS": "2",
    "RLHF_DPO_MAX_LENGTH": "32",
    "RLHF_RUNTIME_THREADS": "1",
    "RLHF_RUNTIME_DEVICE": "cpu",
}
LAUNCHER = """
import os
import sys

import torch
from accelerate import PartialState

import rlhf_train.policy.optimize as optimize
from rlhf_train.cli import main

folder, argv = sys.argv[1], sys.argv[2:]
algorithm_named = optimize._algorithm


def recording(name):
    algorithm = algorithm_named(name)

    def run(job):
        trained, metrics = algorithm(job)
        weights = {key: value.detach().cpu() for key, value in trained.state_dict().items()}
        state = PartialState()  # the one rlhf set up for this launch
        record = {"world": state.num_processes, "weights": weights}
        torch.save(record, f"{folder}/weights-{state.process_index}.pt")
        return trained, metrics

    return run


optimize._algorithm = recording
code = main(argv)
# Whether the process group is still up once the command is done (it should not be).
with open(f"{folder}/group-left-up-{os.environ['RANK']}.txt", "w") as out:
    out.write(str(torch.distributed.is_initialized()))
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    environment |= SETTINGS | {
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # --multi_gpu selects accelerate's torchrun launcher, the one that starts several
    # processes; on a machine without GPUs they join a gloo group on the CPU.
    flags = (
        "--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no"
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", *flags.split()]
    command += ["--main_process_port", str(_free_port()), str(launcher), str(tmp_path), *args]
    # A session of its own, so that a hung run is ended with both of its workers.
    with subprocess.Popen(
        command,
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("algorithm", ["ppo", "dpo", "grpo"])
def test_two_processes_train_one_policy(tiny_policy, tmp_path, monkeypatch, algorithm) -> None:
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "ws"
    assert main(["--workspace", str(root), "init"]) == 0
    if algorithm == "dpo":
        source = ["--data", str(make_export(Workspace.open(root), tmp_path / "export"))]
    else:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("\n".join(f"The film number {i} was" for i in range(8)) + "\n")
        (tmp_path / "rewards.py").write_text(VOWEL_REWARD, encoding="utf-8")
        reward = f"{tmp_path / 'rewards.py'}:vowel_share"
        source = ["--prompts", str(prompts), "--reward", reward]

    done = _launch(
        tmp_path, "--workspace", str(root), "train", algorithm, "--policy", str(tiny_policy),
        *source, "--max-steps", "3", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Trained policy") == 1, done.stdout
    # Torn down by the command itself: left to interpreter exit, gloo can abort a process
    # after its work is done ("terminate called without an active exception").
    for rank in (0, 1):
        assert (tmp_path / f"group-left-up-{rank}.txt").read_text() == "False"

    ranks = [torch.load(tmp_path / f"weights-{rank}.pt") for rank in (0, 1)]
    assert [record["world"] for record in ranks] == [2, 2]
    first, second = (record["weights"] for record in ranks)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)

    with Workspace.open(root).sessions() as session:
        runs = session.scalars(select(TrainingRun)).all()
        assert [(run.kind, run.status) for run in runs] == [(algorithm, "succeeded")]
        trained = session.scalars(select(Model).where(Model.training_run_id.is_not(None))).all()
        assert [model.id for model in trained] == [runs[0].output_model_id]
        assert trained[0].parent.path == str(tiny_policy.resolve())
        saved = AutoModelForCausalLM.from_pretrained(trained[0].path).state_dict()
    # What was published is what both processes hold, and training moved it.
    assert saved.keys() == first.keys()
    assert all(torch.equal(saved[key], first[key]) for key in first)
    start = AutoModelForCausalLM.from_pretrained(tiny_policy).state_dict()
    assert any(not torch.equal(start[key], first[key]) for key in first)
