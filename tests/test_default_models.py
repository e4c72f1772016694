"""The embedded defaults load offline from their packages."""

from __future__ import annotations

import json

import pytest
import torch
from sqlalchemy import select

from db.engine import transaction
from db.models import Sample
from db.prompts import add_prompts
from rlhf_train.builtin_models import BUILTIN_MODELS
from rlhf_train.generate import generate_round
from rlhf_train.sampling import Decoding
from tests.helpers import round_request


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
    from rlhf_train.loading import load_policy

    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert BUILTIN_MODELS["smollm2-135m-instruct"].materialize(workspace.models_dir) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    model, tokenizer = load_policy(str(folder))
    assert model.config.num_hidden_layers == 30 and tokenizer.chat_template
