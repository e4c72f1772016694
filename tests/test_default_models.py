"""The embedded defaults load offline from their packages."""

from __future__ import annotations

import json

import pytest
import torch
from sqlalchemy import select

from db.engine import transaction
from db.models import Sample
from db.prompts import add_prompts
from rlhf_train.models.builtin import BUILTIN_MODELS
from rlhf_train.models.sampling import Decoding
from rlhf_train.rounds.generate import generate_round
from tests.helpers import round_request, set_environment


def test_reward_backbone_loads_as_a_scalar_head_offline(tmp_path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = BUILTIN_MODELS["minilm-l6-v2"].materialize(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    batch = tokenizer(["a fine film", "a dull film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = model(**batch).logits
    assert scores.shape == (2, 1)
    assert tokenizer.sep_token is not None  # what the reward trainer will use as eos


@pytest.mark.slow
def test_default_policy_converts_once_and_generates(sqlite_workspace) -> None:
    workspace = sqlite_workspace
    with transaction(workspace.sessions) as session:
        add_prompts(session, ["This movie was"], source="t", chat=False)
        add_prompts(session, ["Write one sentence about rain."], source="t", chat=True)
    request = round_request(
        "smollm2-135m-instruct",
        n_prompts=2,
        decoding=Decoding(max_new_tokens=12, temperature=0.7, top_p=0.95, batch_size=4),
    )
    report = generate_round(workspace, request, progress=False)
    assert report.samples == 4
    folder = workspace.models_dir / "smollm2-135m-instruct"
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    with workspace.sessions() as session:
        samples = list(session.scalars(select(Sample)))
    assert all(sample.text.strip() for sample in samples)
    assert {sample.decoding["chat_template"] for sample in samples} == {True, False}

    # Later uses read the cached folder: an ordinary checkpoint, converted only once.
    from rlhf_train.models.loading import load_policy

    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert BUILTIN_MODELS["smollm2-135m-instruct"].materialize(workspace.models_dir) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    model, tokenizer = load_policy(str(folder))
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template


@pytest.mark.slow
def test_default_models_train_end_to_end(tmp_path, monkeypatch) -> None:
    """SFT with LoRA, a MiniLM reward model and PPO against it, on the packaged SmolLM2:
    a policy and a reward model with different vocabularies, joined by text."""
    from rlhf_train.cli import main
    from tests.test_reward import make_export

    set_environment(
        monkeypatch,
        {
            "RLHF_RUNTIME_THREADS": "2",
            "RLHF_SFT_MAX_LENGTH": "32",
            "RLHF_SFT_BATCH_SIZE": "2",
            "RLHF_REWARD_MAX_LENGTH": "32",
            "RLHF_REWARD_BATCH_SIZE": "4",
            "RLHF_OPTIMIZE_BATCH_SIZE": "2",
            "RLHF_OPTIMIZE_MAX_NEW_TOKENS": "6",
            "RLHF_PPO_MINIBATCH_SIZE": "2",
            "RLHF_PPO_PPO_EPOCHS": "1",
        },
    )
    root = tmp_path / "ws"
    rlhf = ["--workspace", str(root)]
    assert main([*rlhf, "init"]) == 0
    demos = tmp_path / "demos.txt"
    demos.write_text("A warm, funny film.\nThe best movie of the year.\nI loved it.\n" * 4)
    assert main([*rlhf, "train", "sft", "--data", str(demos), "--lora", "--name", "sft",
                 "--max-steps", "1", "--no-progress"]) == 0  # fmt: skip
    assert main([*rlhf, "models", "merge", "sft"]) == 0

    from rlhf_train.workspace import Workspace

    export = make_export(Workspace.open(root), tmp_path / "export", n=24)
    assert main([*rlhf, "train", "reward", "--data", str(export), "--name", "rm",
                 "--max-steps", "2", "--no-progress"]) == 0  # fmt: skip
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("This movie was\nThe plot\n")
    assert main([*rlhf, "train", "ppo", "--policy", "sft-merged", "--reward", "rm",
                 "--prompts", str(prompts), "--max-steps", "1", "--lora",
                 "--no-progress"]) == 0  # fmt: skip
    with Workspace.open(root).sessions() as session:
        from db.registry import find_model

        trained = find_model(session, "ppo-3")
        assert trained.parent.name == "sft-merged"
        assert trained.config["reward_model_id"] == find_model(session, "rm").id
