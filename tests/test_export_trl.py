"""An export is something TRL trains on: a few real RewardTrainer and DPOTrainer steps
on tiny models built here, reading the export folder as a user would."""

from __future__ import annotations

import pytest
import torch
from datasets import load_from_disk

from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts
from tests.tiny_models import build_tiny_reward_model

TRAINING = dict(
    per_device_train_batch_size=2,
    max_steps=3,
    learning_rate=1e-3,
    report_to="none",
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    save_strategy="no",
    logging_steps=1,
    dataloader_num_workers=0,
)


@pytest.fixture
def export_folder(sqlite_workspace, tiny_policy, tmp_path):
    store_prompts(sqlite_workspace, [f"This film number {i} was" for i in range(8)])
    generate_round(sqlite_workspace, round_request(tiny_policy, n_prompts=8), False)
    record_votes(
        sqlite_workspace,
        {
            i: [("ann", "A" if i % 2 else "B", 2), ("bob", "A" if i % 2 else "B", None)]
            for i in range(8)
        },
    )
    out = tmp_path / "export"
    export_preferences(sqlite_workspace, ExportOptions(out=out, test_fraction=0.25))
    return out


def _trains(trainer) -> None:
    """A few steps run, the loss is finite and the weights moved."""
    model = trainer.model
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_reward_trainer_trains_on_an_export(export_folder, tmp_path) -> None:
    from trl import RewardConfig, RewardTrainer

    dataset = load_from_disk(str(export_folder / "hf"))
    model, tokenizer = build_tiny_reward_model()
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(output_dir=str(tmp_path / "rm"), max_length=64, **TRAINING),
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"],
        processing_class=tokenizer,
    )
    _trains(trainer)
    assert "eval_loss" in trainer.evaluate()


def test_dpo_trainer_trains_on_an_export(export_folder, tiny_policy, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_from_disk(str(export_folder / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_policy),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=64, **TRAINING),
        train_dataset=dataset["train"],
        processing_class=tokenizer,
    )
    _trains(trainer)
