"""Our PPO on a tiny policy with a reward that can be computed: the share of vowels in
the response. Real rollouts and updates, no mocks; each run takes a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from db.models import Model, TrainingRun
from rlhf_train.cli import main
from rlhf_train.models.loading import load_policy
from rlhf_train.models.sampling import PromptInput
from rlhf_train.policy.ppo import PPOConfig, PPOTrainer
from rlhf_train.runs.record import run_checkpoints
from rlhf_train.runs.trainer_args import last_checkpoint
from rlhf_train.workspace import Workspace
from tests.helpers import set_environment

PROMPTS = [PromptInput(f"This film number {i} was", False) for i in range(32)]
FAST = dict(
    rollout_batch_size=16,
    minibatch_size=8,
    max_new_tokens=8,
    learning_rate=3e-3,
    missing_eos_penalty=None,
    normalize_rewards=True,
)


def vowel_share(prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses])


def run(policy_folder: Path, count: int, **config: object) -> tuple[PPOTrainer, list[dict]]:
    """A trainer with FAST | config, after `count` steps, and each step's statistics."""
    torch.set_num_threads(1)
    policy, tokenizer = load_policy(str(policy_folder))
    trainer = PPOTrainer(PPOConfig(**(FAST | config)), policy, tokenizer, vowel_share, PROMPTS)
    return trainer, [trainer.step() for _ in range(count)]


def mean_of(history: list[dict], key: str, steps: slice) -> float:
    values = [stats[key] for stats in history[steps]]
    return sum(values) / len(values)


def test_ppo_raises_the_reward_while_the_kl_stays_bounded(tiny_policy) -> None:
    _, history = run(tiny_policy, 30, kl_coef=0.05)
    before = mean_of(history, "score_mean", slice(0, 5))
    after = mean_of(history, "score_mean", slice(-5, None))
    assert after > before + 0.2, (before, after)
    assert max(stats["kl"] for stats in history) < 40
    assert all(stats["clip_fraction"] < 0.8 for stats in history)


def test_a_very_high_kl_coefficient_holds_the_policy_in_place(tiny_policy) -> None:
    _, loose = run(tiny_policy, 20, kl_coef=0.05)
    _, tight = run(tiny_policy, 20, kl_coef=5.0)
    before = mean_of(tight, "score_mean", slice(0, 5))
    after = mean_of(tight, "score_mean", slice(-5, None))
    assert abs(after - before) < 0.05, (before, after)
    assert mean_of(tight, "kl", slice(-5, None)) < mean_of(loose, "kl", slice(-5, None)) / 4


def test_same_seed_same_weights(tiny_policy) -> None:
    first, history_a = run(tiny_policy, 3, seed=7)
    second, history_b = run(tiny_policy, 3, seed=7)
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [s["samples"] for s in history_a] == [s["samples"] for s in history_b]
    third, _ = run(tiny_policy, 3, seed=8)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(first.model.parameters(), third.model.parameters(), strict=True)
    )


def test_lora_reference_is_the_policy_without_its_adapter(tiny_policy) -> None:
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(1)
    policy, tokenizer = load_policy(str(tiny_policy))
    adapted = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    trainer = PPOTrainer(PPOConfig(**FAST), adapted, tokenizer, vowel_share, PROMPTS)
    assert trainer.reference is None  # no second copy of the weights
    first = trainer.step()
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA starts as the identity
    for _ in range(5):
        trainer.step()
    rollout = trainer.rollout(PROMPTS[:4])
    base, _ = load_policy(str(tiny_policy))
    with torch.no_grad():
        logits = base(
            input_ids=rollout.query_responses,
            attention_mask=rollout.attention_mask,
            position_ids=rollout.position_ids,
        ).logits
    from rlhf_train.models.sampling import response_logprobs

    expected = response_logprobs(logits, rollout.query_responses, rollout.prompt_length, 1.0)
    mask = rollout.response_mask.bool()
    assert torch.allclose(rollout.ref_logprobs[mask], expected[mask], atol=1e-5)
    assert not torch.allclose(rollout.logprobs[mask], expected[mask], atol=1e-3)


def test_a_linear_schedule_decays_the_learning_rate_to_zero_at_the_last_step(tiny_policy) -> None:
    trainer, _ = run(tiny_policy, 3, lr_schedule="linear", steps=4)
    # The third step trained at 1 - 2/4 of the rate.
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(FAST["learning_rate"] / 2)
    trainer.step()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(FAST["learning_rate"] / 4)
    constant, _ = run(tiny_policy, 3)
    assert constant.optimizer.param_groups[0]["lr"] == FAST["learning_rate"]


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_the_value_head_can_learn_at_its_own_rate(tiny_policy, value_model) -> None:
    rate, value_rate = FAST["learning_rate"], 10 * FAST["learning_rate"]
    trainer, _ = run(
        tiny_policy,
        3,
        value_learning_rate=value_rate,
        value_model=value_model,
        lr_schedule="linear",
        steps=4,
    )
    model = trainer.accelerator.unwrap_model(trainer.model)
    policy_group, value_group = trainer.optimizer.param_groups
    value_ids = {id(p) for p in model.value_head.parameters()}
    if value_model == "separate":
        value_ids |= {id(p) for p in model.critic.parameters()}
    assert {id(p) for p in value_group["params"]} == value_ids
    assert not value_ids & {id(p) for p in policy_group["params"]}
    # Both follow the schedule (the third step trained at half the rate).
    assert policy_group["lr"] == pytest.approx(rate / 2)
    assert value_group["lr"] == pytest.approx(value_rate / 2)
    # Without it: one group at the policy's rate, as in runs before the setting existed.
    plain, _ = run(tiny_policy, 1)
    assert len(plain.optimizer.param_groups) == 1


def test_separate_value_model_has_its_own_trunk(tiny_policy) -> None:
    trainer, history = run(tiny_policy, 2, value_model="separate")
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.critic is not None
    policy_embedding = model.policy.get_input_embeddings().weight
    assert model.critic.get_input_embeddings().weight.data_ptr() != policy_embedding.data_ptr()
    assert all(torch.isfinite(torch.tensor(s["value_loss"])) for s in history)


def test_responses_without_an_end_token_are_penalized(tiny_policy) -> None:
    trainer, _ = run(tiny_policy, 0, missing_eos_penalty=2.0, normalize_rewards=False)
    rollout = trainer.rollout(PROMPTS[:8])
    shaped = trainer._shaped_scores(rollout)
    expected = torch.where(rollout.finished, rollout.scores, rollout.scores - 2.0)
    assert torch.allclose(shaped, expected)
    assert (~rollout.finished).any()  # 8 new tokens from a random policy rarely end


# ---- through the command line -------------------------------------------------------


@pytest.fixture
def ppo_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    set_environment(
        monkeypatch,
        {
            "RLHF_RUNTIME_THREADS": "1",
            "RLHF_RUNTIME_DEVICE": "cpu",
            "RLHF_OPTIMIZE_MAX_NEW_TOKENS": "8",
            "RLHF_OPTIMIZE_LEARNING_RATE": "0.003",
        },
    )
    root = tmp_path / "ws"
    assert main(["--workspace", str(root), "init"]) == 0
    (tmp_path / "rewards.py").write_text(
        "def vowels(prompts, responses):\n"
        "    return [sum(c in 'aeiou' for c in r) / max(1, len(r)) for r in responses]\n"
    )
    (tmp_path / "prompts.txt").write_text("\n".join(p.text for p in PROMPTS) + "\n")
    return root


def ppo_cli(root: Path, policy: Path, *extra: str) -> int:
    tmp = root.parent
    return main(
        [
            "--workspace", str(root), "train", "ppo", "--policy", str(policy),
            "--reward", f"{tmp / 'rewards.py'}:vowels", "--prompts", str(tmp / "prompts.txt"),
            "--no-progress", *extra,
        ]
    )  # fmt: skip


def test_cli_trains_saves_and_registers_with_lineage(ppo_ws, tiny_policy, capsys) -> None:
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "4", "--name", "ppo-a") == 0
    out = capsys.readouterr().out
    assert "Mean score" in out and "rlhf models promote ppo-a" in out
    workspace = Workspace.open(ppo_ws)
    with workspace.sessions() as session:
        model = session.scalar(select(Model).where(Model.name == "ppo-a"))
        run = session.get(TrainingRun, model.training_run_id)
        assert model.kind == "policy" and model.parent.path == str(tiny_policy.resolve())
        assert run.kind == "ppo" and run.status == "succeeded" and run.output_model_id == model.id
        assert model.config["reward"].startswith("function ")
        assert model.metrics["steps"] == 4
    records = [json.loads(line) for line in Path(run.log_path).read_text().splitlines()]
    steps = [r for r in records if "kl" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("score_mean", "kl", "entropy", "clip_fraction", "approx_kl", "value_loss",
                "explained_variance", "response_length", "seconds"):  # fmt: skip
        assert key in steps[0]
    assert any("samples" in r for r in records)
    load_policy(model.path)  # a plain folder


def _only_run(workspace: Workspace) -> TrainingRun:
    with workspace.sessions() as session:
        return session.scalars(select(TrainingRun)).one()


def _resume_matches_a_straight_run(ppo_ws: Path, tiny_policy) -> None:
    assert main(["--workspace", str(ppo_ws), "train", "ppo", "--resume", "--no-progress"]) == 0
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "5", "--name", "straight") == 0
    resumed, _ = load_policy(str(ppo_ws / "models" / "resumed"))
    straight, _ = load_policy(str(ppo_ws / "models" / "straight"))
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_cli_resume_continues_exactly_where_it_stopped(
    ppo_ws, tiny_policy, monkeypatch, capsys
) -> None:
    from rlhf_train.policy import ppo as ppo

    original = ppo.PPOTrainer.step

    def killed_at_step_5(self):
        if self.step_count == 4:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(ppo.PPOTrainer, "step", killed_at_step_5)
    args = ("--max-steps", "5", "--checkpoint-every", "2", "--name", "resumed")
    assert ppo_cli(ppo_ws, tiny_policy, *args) == 130
    monkeypatch.setattr(ppo.PPOTrainer, "step", original)
    workspace = Workspace.open(ppo_ws)
    run = _only_run(workspace)
    assert run.status == "cancelled"
    # Like the Trainer's save_total_limit=1: a new checkpoint replaces the older one.
    checkpoints = run_checkpoints(workspace, run.id)
    assert [path.name for path in checkpoints.iterdir()] == ["checkpoint-4"]
    _resume_matches_a_straight_run(ppo_ws, tiny_policy)


def test_resume_skips_a_checkpoint_cut_off_while_it_was_written(
    ppo_ws, tiny_policy, monkeypatch, capsys
) -> None:
    from accelerate import Accelerator

    original = Accelerator.save_state

    def killed_while_saving(self, output_dir=None, **kwargs):
        saved = original(self, output_dir, **kwargs)
        if Path(output_dir).name == "checkpoint-4":
            # What a SIGKILL halfway through writing the optimizer state leaves behind.
            optimizer = next(Path(output_dir).glob("optimizer*"))
            optimizer.write_bytes(optimizer.read_bytes()[:64])
            raise KeyboardInterrupt
        return saved

    monkeypatch.setattr(Accelerator, "save_state", killed_while_saving)
    args = ("--max-steps", "5", "--checkpoint-every", "2", "--name", "resumed")
    assert ppo_cli(ppo_ws, tiny_policy, *args) == 130
    monkeypatch.setattr(Accelerator, "save_state", original)
    workspace = Workspace.open(ppo_ws)
    checkpoints = run_checkpoints(workspace, _only_run(workspace).id)
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert last_checkpoint(checkpoints) == checkpoints / "checkpoint-2"
    _resume_matches_a_straight_run(ppo_ws, tiny_policy)


def test_cli_stops_early_when_the_kl_passes_its_limit(
    ppo_ws, tiny_policy, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RLHF_PPO_KL_LIMIT", "0.5")
    monkeypatch.setenv("RLHF_OPTIMIZE_LEARNING_RATE", "0.02")
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "30", "--name", "early") == 0
    out = capsys.readouterr().out
    assert "passed ppo.kl_limit (0.5)" in out
    with Workspace.open(ppo_ws).sessions() as session:
        metrics = session.scalar(select(Model).where(Model.name == "early")).metrics
    assert metrics["steps"] < 30 and "stopped_early" in metrics


def _first_kl(workspace: Workspace, name: str) -> float:
    with workspace.sessions() as session:
        return session.scalar(select(Model).where(Model.name == name)).metrics["first_kl"]


@pytest.mark.parametrize("lora", [False, True])
def test_a_second_run_can_be_held_to_the_first_policy_of_its_lineage(
    ppo_ws, tiny_policy, monkeypatch, lora
) -> None:
    flags = ["--lora"] if lora else []
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "6", "--name", "first", *flags) == 0
    first = str(ppo_ws / "models" / "first")
    assert ppo_cli(ppo_ws, first, "--max-steps", "1", "--name", "to-parent", *flags) == 0
    monkeypatch.setenv("RLHF_PPO_REFERENCE", "start")
    assert ppo_cli(ppo_ws, first, "--max-steps", "1", "--name", "to-start", *flags) == 0
    workspace = Workspace.open(ppo_ws)
    # Held to its parent, a run starts where its reference is; held to the start, it
    # starts as far away as the first run took it.
    assert _first_kl(workspace, "to-parent") == pytest.approx(0.0, abs=1e-4)
    assert _first_kl(workspace, "to-start") > 0.05
    # The start is its own start: the first run from it needs no second copy.
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "1", "--name", "again", *flags) == 0
    assert _first_kl(workspace, "again") == pytest.approx(0.0, abs=1e-4)


def test_cli_lora_saves_merged_or_adapter_and_tensorboard(ppo_ws, tiny_policy) -> None:
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "2", "--lora", "--name", "merged") == 0
    assert (ppo_ws / "models" / "merged" / "config.json").is_file()
    assert ppo_cli(
        ppo_ws, tiny_policy, "--max-steps", "2", "--lora", "--save-adapter", "--name", "adapter",
        "--report-to", "tensorboard",
    ) == 0  # fmt: skip
    assert (ppo_ws / "models" / "adapter" / "adapter_config.json").is_file()
    load_policy(str(ppo_ws / "models" / "adapter"))
    assert list((ppo_ws / "logs").glob("run-*-tensorboard/events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--reward", "nowhere.py:score"), "Cannot import the reward function module"),
        (("--batch-size", "5"), "multiple of ppo.minibatch_size"),
        (("--save-adapter",), "needs --lora"),
        (("--prompts", "missing.txt"), "missing.txt"),
    ],
)
def test_cli_bad_input(ppo_ws, tiny_policy, capsys, extra, message) -> None:
    assert ppo_cli(ppo_ws, tiny_policy, "--max-steps", "1", *extra) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and message in err[0]
    with Workspace.open(ppo_ws).sessions() as session:
        assert session.scalars(select(TrainingRun)).all() == []
