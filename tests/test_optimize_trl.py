"""`rlhf train dpo|rloo|grpo`: real TRL trainer steps on a tiny policy built in the test run,
on exports made through the real import and export code and on a Python reward function."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from transformers import AutoModelForCausalLM

from db.engine import transaction
from db.models import Model, TrainingRun
from rlhf_train.cli import main
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.policy.optimize import OptimizeOptions, optimize_policy
from rlhf_train.rounds.import_preferences import PreferenceRow, import_preferences
from rlhf_train.runs.record import read_run_log
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

# Sizes for a two-layer model on one CPU thread; set as RLHF_* variables so that the
# API and the CLI read the same settings.
SETTINGS = {
    "RLHF_OPTIMIZE_BATCH_SIZE": "4",
    "RLHF_OPTIMIZE_MAX_NEW_TOKENS": "8",
    "RLHF_OPTIMIZE_LEARNING_RATE": "0.01",
    "RLHF_GROUP_NUM_GENERATIONS": "2",
    "RLHF_DPO_MAX_LENGTH": "32",
    "RLHF_RUNTIME_THREADS": "1",
    "RLHF_RUNTIME_DEVICE": "cpu",
}
VOWEL_REWARD = '''
def vowel_share(prompts, responses):
    """The share of a response's letters that are vowels: a reward a tiny policy can learn."""
    shares = []
    for response in responses:
        letters = [c for c in response.lower() if c.isalpha()]
        shares.append(sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0)
    return shares
'''


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    opened = Workspace.open(tmp_path / "ws")
    init_workspace(opened)
    yield opened
    opened.engine.dispose()


@pytest.fixture
def reward(tmp_path: Path) -> str:
    path = tmp_path / "rewards.py"
    path.write_text(VOWEL_REWARD, encoding="utf-8")
    return f"{path}:vowel_share"


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(f"The film number {i} was" for i in range(8)) + "\n")
    return path


def make_export(workspace: Workspace, out: Path, n: int = 40) -> Path:
    """Pairs where praise is chosen over complaints, imported and exported as a team would."""
    rng = random.Random(0)
    good, bad = ["great", "wonderful", "loved", "funny"], ["terrible", "boring", "waste", "long"]
    rows = [
        PreferenceRow(
            f"Film {i} was",
            " " + " ".join(rng.choices(good, k=3)),
            " " + " ".join(rng.choices(bad, k=3)),
        )
        for i in range(n)
    ]
    with transaction(workspace.sessions) as session:
        import_preferences(session, rows, "toy")
    export_preferences(workspace, ExportOptions(out=out, test_fraction=0.2))
    return out


def rlhf(workspace: Workspace, *args: str) -> int:
    return main(["--workspace", str(workspace.root), *args, "--no-progress"])


def registered(workspace: Workspace, name: str) -> tuple[Model, TrainingRun]:
    with workspace.sessions() as session:
        model = session.scalar(select(Model).where(Model.name == name))
        run = session.get(TrainingRun, model.training_run_id)
        session.expunge_all()
        return model, run


def weights_moved(before: Path, after: Path) -> bool:
    start = AutoModelForCausalLM.from_pretrained(before).state_dict()
    end = AutoModelForCausalLM.from_pretrained(after).state_dict()
    assert start.keys() == end.keys()
    return any(not torch.equal(start[key], end[key]) for key in start)


def test_dpo_registers_a_trained_child_of_the_starting_policy(ws, tiny_policy, tmp_path) -> None:
    export = make_export(ws, tmp_path / "export")
    result = optimize_policy(
        ws,
        OptimizeOptions("dpo", policy=str(tiny_policy), data=str(export), max_steps=6),
    )

    model, run = registered(ws, result.name)
    assert result.name == f"dpo-{run.id}" and model.kind == "policy"
    with ws.sessions() as session:
        parent = session.get(Model, model.parent_id)
        assert parent.path == str(tiny_policy.resolve())
    assert run.kind == "dpo" and run.status == "succeeded" and run.output_model_id == model.id
    assert run.export_id is not None and model.config["export_id"] == run.export_id
    assert weights_moved(tiny_policy, result.path)
    metrics = result.metrics
    assert metrics["steps"] == 6 and metrics["train_pairs"] > 20
    # At step 1 the policy is its own reference, so DPO's implicit rewards are all 0;
    # six steps on separable pairs must open a margin in favour of the chosen responses.
    assert metrics["first_reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["last_reward_margin"] > 0 and metrics["last_reward_accuracy"] > 0.5
    # DPO has no reward model to score samples with, so no score line is invented.
    assert "first_score_mean" not in metrics and "last_kl" not in metrics
    log = read_run_log(Path(run.log_path))
    assert [record["step"] for record in log if "rewards/margins" in record] == [1, 2, 3, 4, 5, 6]
    assert not (ws.root / "checkpoints" / f"run-{run.id}").exists()


def test_dpo_epochs_stop_before_the_steps(ws, tiny_policy, tmp_path, monkeypatch) -> None:
    """dpo.epochs caps optimize.steps: half a pass over ~32 pairs in batches of 4 is 4 steps."""
    export = make_export(ws, tmp_path / "export")
    monkeypatch.setenv("RLHF_DPO_EPOCHS", "0.5")
    result = optimize_policy(
        Workspace.open(ws.root), OptimizeOptions("dpo", policy=str(tiny_policy), data=str(export))
    )
    pairs = result.metrics["train_pairs"]
    assert result.metrics["steps"] == -(-pairs // 8) < 100


def test_dpo_lora_merges_unless_the_adapter_is_kept(ws, tiny_policy, tmp_path, capsys) -> None:
    export = make_export(ws, tmp_path / "export")
    common = ["--data", str(export), "--policy", str(tiny_policy), "--lora", "--max-steps", "2"]
    assert rlhf(ws, "train", "dpo", *common, "--name", "merged") == 0
    assert rlhf(ws, "train", "dpo", *common, "--name", "adapter", "--save-adapter") == 0
    assert "Trained policy 'adapter' with dpo" in capsys.readouterr().out

    merged, _ = registered(ws, "merged")
    assert (Path(merged.path) / "config.json").is_file()
    assert not (Path(merged.path) / "adapter_config.json").exists()
    assert weights_moved(tiny_policy, Path(merged.path))
    adapter, _ = registered(ws, "adapter")
    assert (Path(adapter.path) / "adapter_config.json").is_file()
    assert adapter.config["adapter"] and adapter.config["base_model"] == str(tiny_policy.resolve())


@pytest.mark.parametrize(("algorithm", "chat"), [("rloo", False), ("grpo", True)])
def test_group_trainers_run_on_a_python_reward(
    ws, tiny_policy, reward, prompts, capsys, algorithm, chat
) -> None:
    args = ["--reward", reward, "--prompts", str(prompts), "--policy", str(tiny_policy)]
    args += ["--max-steps", "3", "--samples-every", "2", "--report-to", "tensorboard"]
    code = rlhf(ws, "train", algorithm, *args, *(["--chat"] if chat else []))
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"with {algorithm}" in out and "Mean score" in out

    with ws.sessions() as session:
        model = session.scalar(select(Model).where(Model.name.like(f"{algorithm}-%")))
        name = model.name
    model, run = registered(ws, name)
    assert run.status == "succeeded" and run.progress == 1.0
    assert model.config["reward_model_id"] is None and "vowel_share" in model.config["reward"]
    metrics = run.metrics
    assert metrics["steps"] == 3 and metrics["episodes"] == 3 * 4 * 2
    assert 0 <= metrics["first_score_mean"] <= 1 and metrics["last_kl"] >= 0
    log = read_run_log(Path(run.log_path))
    tables = {record["step"]: record["samples"] for record in log if "samples" in record}
    assert sorted(tables) == [1, 2] and len(tables[1]) == 4 * 2
    assert all(set(sample) == {"prompt", "response", "score"} for sample in tables[1])
    # Chat prompts reach the reward function as the user's text, not as a template.
    assert tables[1][0]["prompt"].startswith("The film number")
    assert list((ws.logs_dir / f"run-{run.id}-tensorboard").glob("events.out.tfevents.*"))
    assert AutoModelForCausalLM.from_pretrained(model.path) is not None


def test_time_limit_stops_after_the_step_that_passes_it(
    ws, tiny_policy, reward, prompts, capsys
) -> None:
    for algorithm in ("grpo", "ppo"):
        args = ["--reward", reward, "--prompts", str(prompts), "--policy", str(tiny_policy)]
        args += ["--max-steps", "50", "--time-limit", "0.0001", "--name", f"timed-{algorithm}"]
        args += ["--batch-size", "8"] if algorithm == "ppo" else []
        assert rlhf(ws, "train", algorithm, *args) == 0, capsys.readouterr().err
        model, run = registered(ws, f"timed-{algorithm}")
        assert run.metrics["steps"] == 1 and run.metrics["stopped_by_time_limit"] == 0.0001


def test_grpo_raises_the_mean_reward(ws, tiny_policy, reward, prompts, monkeypatch) -> None:
    """A check that fails when nothing is learned: on the vowel reward the logged mean
    score climbs from about 0.27 to about 0.7 in 30 steps (calibrated over three seeds;
    the smallest rise seen was 0.27 between the five first and five last steps)."""
    monkeypatch.setenv("RLHF_OPTIMIZE_BATCH_SIZE", "8")
    monkeypatch.setenv("RLHF_GROUP_NUM_GENERATIONS", "4")
    options = OptimizeOptions(
        "grpo",
        policy=str(tiny_policy),
        reward=reward,
        prompts=str(prompts),
        max_steps=30,
        progress=False,
    )
    result = optimize_policy(Workspace.open(ws.root), options)

    log = read_run_log(ws.logs_dir / f"run-{result.run_id}.jsonl")
    means = [record["reward"] for record in log if "reward" in record]
    assert len(means) == 30
    assert sum(means[-5:]) / 5 - sum(means[:5]) / 5 > 0.15, means
    assert result.metrics["last_score_mean"] - result.metrics["first_score_mean"] > 0.1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no data", "pass --data"),
        ("empty train split", "train split"),
        ("missing reward file", "Cannot import the reward function module"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(
    ws, tiny_policy, prompts, tmp_path, capsys, case, message
) -> None:
    policy = ["--policy", str(tiny_policy), "--max-steps", "1"]
    if case == "no data":
        code = rlhf(ws, "train", "dpo", *policy)
    elif case == "empty train split":
        code = rlhf(ws, "train", "dpo", *policy, "--data", str(_emptied_train(ws, tmp_path)))
    else:
        missing = f"{tmp_path / 'nowhere.py'}:score"
        code = rlhf(ws, "train", "grpo", *policy, "--prompts", str(prompts), "--reward", missing)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    with ws.sessions() as session:
        assert session.scalars(select(TrainingRun)).all() == []


def _emptied_train(workspace: Workspace, tmp_path: Path) -> Path:
    """A real export whose train split has been emptied (its test split keeps its pairs)."""
    from datasets import load_from_disk

    export = make_export(workspace, tmp_path / "export", n=10)
    data = load_from_disk(str(export / "hf"))
    data["train"] = data["train"].select([])
    copy = tmp_path / "empty-train"
    data.save_to_disk(str(copy / "hf"), num_shards={name: 1 for name in data})
    (copy / "manifest.json").write_text((export / "manifest.json").read_text())
    return copy
