"""Supervised fine-tuning on tiny policies: full and LoRA runs, merging, refusals, resume.

Every run is a few optimizer steps on a two-layer Llama, with a learning rate high enough
that a handful of steps on a repeated corpus measurably lowers the held-out loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select
from transformers import TrainerCallback

from db.engine import transaction
from db.models import Model, TrainingRun
from db.registry import current_policy, find_model
from rlhf_train.errors import UserError
from rlhf_train.models.loading import load_policy
from rlhf_train.models.merge import merge_lora
from rlhf_train.models.source import resolve_policy
from rlhf_train.rounds.generate import generate_round
from rlhf_train.runs.record import read_run_log, run_checkpoints
from rlhf_train.sft.train import SftOptions, train_sft
from rlhf_train.workspace import Workspace
from tests.helpers import round_request, store_prompts
from tests.tiny_models import CORPUS, build_tiny_policy

SETTINGS = {
    "sft.batch_size": 2,
    "sft.max_length": 32,
    "sft.learning_rate": 1e-2,
    "sft.eval_fraction": 0.2,
    "sft.checkpoint_every": 100,
    # One thread: a two-layer model's matrices are too small to split, and a second
    # thread waiting on a busy core slows every step several times over.
    "runtime.threads": 1,
    "runtime.device": "cpu",
}
SENTENCES = sorted(set(CORPUS))


def _reopen(workspace: Workspace, **changes: object) -> Workspace:
    """`workspace` with the test SFT settings (and `changes`) on the same database."""
    overrides = {"database.url": workspace.db_url, **SETTINGS, **changes}
    return Workspace.open(workspace.root, overrides)


@pytest.fixture
def sft_ws(sqlite_workspace: Workspace):
    opened = _reopen(sqlite_workspace)
    yield opened
    opened.engine.dispose()


@pytest.fixture
def policy(tiny_policy: Path) -> Path:
    return tiny_policy  # SFT trains a copy and never writes into its starting folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "demos.txt"
    path.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    return path


def _options(data: Path, policy: Path | str | None, **changes: object) -> SftOptions:
    fields: dict[str, object] = {
        "data": str(data),
        "policy": None if policy is None else str(policy),
        "max_steps": 5,
        "progress": False,
    }
    fields.update(changes)
    return SftOptions(**fields)


def _runs(workspace: Workspace) -> list[TrainingRun]:
    with workspace.sessions() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def _model(workspace: Workspace, name: str) -> Model:
    with workspace.sessions() as session:
        return find_model(session, name)


def _logits(location: str, ids: torch.Tensor) -> torch.Tensor:
    model, _ = load_policy(location)
    with torch.no_grad():
        return model(ids).logits


class _Recorder(TrainerCallback):
    """Keeps what the tests look at: the steps taken and the prepared training data."""

    def __init__(self, stop_at: int | None = None, error: BaseException | None = None) -> None:
        self.steps: list[int] = []
        self.train_data = None
        self.stop_at, self.error = stop_at, error

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.train_data = train_dataloader.dataset

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)
        if state.global_step == self.stop_at:
            raise self.error  # what a kill or a crash looks like from inside the loop


def test_full_sft_registers_a_better_child_policy(workspace, policy, text_file) -> None:
    ws = _reopen(workspace)
    result = train_sft(ws, _options(text_file, policy))

    metrics = result.metrics
    assert metrics["steps"] == 5 and metrics["resumed_from_step"] is None
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"] - 0.1
    assert metrics["perplexity_before"] == pytest.approx(math.exp(metrics["eval_loss_before"]))
    assert metrics["perplexity_after"] == pytest.approx(math.exp(metrics["eval_loss_after"]))
    assert metrics["train_examples"] + metrics["eval_examples"] == 4 * len(SENTENCES)
    assert metrics["eval_examples"] == round(0.2 * 4 * len(SENTENCES))
    assert metrics["train_loss"] > 0 and metrics["train_runtime"] > 0

    assert result.path == ws.models_dir / f"sft-{result.run_id}"
    assert json.loads((result.path / "metrics.json").read_text()) == metrics
    assert not (result.path / "training_args.bin").exists()
    child = load_file(result.path / "model.safetensors")
    parent = load_file(policy / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(child[name], parent[name])

    with ws.sessions() as session:
        model = session.get(Model, result.model_id)
        start = find_model(session, policy.name)
        run = session.get(TrainingRun, result.run_id)
        assert (model.name, model.kind, model.path) == (result.name, "policy", str(result.path))
        assert model.parent_id == start.id and model.training_run_id == run.id
        assert model.metrics == metrics
        assert model.config["lora"] is False and model.config["policy"] == start.name
        assert model.config["sft"]["batch_size"] == 2 and model.config["format"] == "text"
        # Not promoted without --promote: the starting policy is still the current one.
        assert current_policy(session).id == start.id
        assert (run.kind, run.status, run.progress) == ("sft", "succeeded", 1.0)
        # The run also records how many processes trained it (a resume must use as many).
        assert run.output_model_id == model.id and run.metrics == metrics | {"processes": 1}
        assert run.config["data"] == str(text_file.resolve())
    assert any(record["step"] == 5 for record in read_run_log(Path(run.log_path)))
    assert not run_checkpoints(ws, result.run_id).exists()
    ws.engine.dispose()


def test_prompt_completion_trains_on_completions_only(sft_ws, policy, tmp_path) -> None:
    pairs = [{"prompt": f"Review {i}:", "completion": f" {s}"} for i, s in enumerate(SENTENCES)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(pair) for pair in pairs * 2) + "\n", encoding="utf-8")
    recorder = _Recorder()
    result = train_sft(
        sft_ws, _options(data, policy, max_steps=2, promote=True), callbacks=[recorder]
    )

    assert len(recorder.train_data) == 2 * len(SENTENCES) - 2  # two held out
    for example in recorder.train_data:
        labels = example["labels"]
        prompt_length = labels.index(next(label for label in labels if label != -100))
        # The prompt's tokens carry no loss; every completion token (and the end) does.
        assert prompt_length >= 2 and all(label == -100 for label in labels[:prompt_length])
        assert labels[prompt_length:] == example["input_ids"][prompt_length:]
    with sft_ws.sessions() as session:
        assert current_policy(session).id == result.model_id  # --promote
        assert session.get(Model, result.model_id).config["format"] == "prompt-completion"


def test_text_data_trains_on_every_token(sft_ws, policy, text_file) -> None:
    recorder = _Recorder()
    train_sft(sft_ws, _options(text_file, policy, max_steps=1), callbacks=[recorder])
    assert len(recorder.train_data) > 0
    for example in recorder.train_data:
        assert example["labels"] == example["input_ids"]


def test_chat_messages_need_a_chat_template(sft_ws, policy, tmp_path) -> None:
    chats = [
        {"messages": [{"role": "user", "content": "Say"}, {"role": "assistant", "content": s}]}
        for s in SENTENCES
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps(chat) for chat in chats) + "\n", encoding="utf-8")
    result = train_sft(sft_ws, _options(data, policy, max_steps=1, name="chatty"))
    assert result.name == "chatty" and result.metrics["steps"] == 1

    plain = build_tiny_policy(tmp_path / "plain", chat_template=False)
    with pytest.raises(UserError, match="chats.jsonl holds chat messages.*no chat template"):
        train_sft(sft_ws, _options(data, plain, max_steps=1))


def test_lora_sft_saves_an_adapter_that_loads_generates_and_merges(
    sft_ws, policy, text_file
) -> None:
    result = train_sft(sft_ws, _options(text_file, policy, lora=True))
    assert (result.path / "adapter_config.json").is_file()
    assert not (result.path / "config.json").exists()
    adapter = _model(sft_ws, result.name)
    assert adapter.config["lora"] is True and adapter.config["base_model"] == str(policy.resolve())
    assert adapter.config["lora_settings"]["rank"] == 16
    assert result.metrics["eval_loss_after"] < result.metrics["eval_loss_before"]

    # The adapter is a policy like any other: a round can be generated with it.
    store_prompts(sft_ws, ["The film was", "The actors were"])
    report = generate_round(sft_ws, round_request(result.name, n_prompts=2), False)
    assert report.samples == 4

    ids = torch.tensor([[1, 20, 40, 60, 80, 100]])
    adapted = _logits(str(result.path), ids)
    assert not torch.allclose(adapted, _logits(str(policy), ids), atol=1e-4)

    merged = merge_lora(sft_ws, result.name)
    assert merged.name == f"{result.name}-merged" and merged.parent_id == adapter.id
    assert merged.config == {"merged_from": result.name}
    assert (Path(merged.path) / "config.json").is_file()
    assert not (Path(merged.path) / "adapter_config.json").exists()
    assert torch.allclose(_logits(merged.path, ids), adapted, atol=1e-4)
    with sft_ws.sessions() as session:
        assert current_policy(session).name == policy.name  # the adapter was not current

    with pytest.raises(UserError, match="already registered"):
        merge_lora(sft_ws, result.name)
    with pytest.raises(UserError, match="is a full model, not a LoRA adapter"):
        merge_lora(sft_ws, merged.name, "again")
    with pytest.raises(UserError, match="There is no registered policy 'nope'"):
        merge_lora(sft_ws, "nope")
    with pytest.raises(UserError, match=f"{result.name}' is a LoRA adapter; merge it first"):
        train_sft(sft_ws, _options(text_file, result.name, lora=True))


def test_merging_the_current_adapter_promotes_the_merge(sft_ws, policy, text_file) -> None:
    result = train_sft(sft_ws, _options(text_file, policy, lora=True, max_steps=1, promote=True))
    merged = merge_lora(sft_ws, result.name, "merged-policy")
    with sft_ws.sessions() as session:
        assert current_policy(session).id == merged.id
        assert session.get(Model, merged.id).name == "merged-policy"


def test_unknown_lora_target_is_refused_before_training(sqlite_workspace, policy, text_file):
    ws = _reopen(sqlite_workspace, **{"lora.target_modules": "q_proj,warp_drive"})
    with pytest.raises(UserError, match="'warp_drive' is not in the llama model"):
        train_sft(ws, _options(text_file, policy, lora=True))
    assert not any(run.status == "succeeded" for run in _runs(ws))
    assert not [path for path in ws.models_dir.iterdir() if path.name.startswith("sft")]
    ws.engine.dispose()


def test_taken_or_bad_names_are_refused_before_any_run(sft_ws, policy, text_file) -> None:
    train_sft(sft_ws, _options(text_file, policy, max_steps=1, name="mine"))
    before = len(_runs(sft_ws))
    with pytest.raises(UserError, match="'mine' is already registered"):
        train_sft(sft_ws, _options(text_file, policy, name="mine"))
    with pytest.raises(UserError, match="cannot name a model"):
        train_sft(sft_ws, _options(text_file, policy, name="no spaces please"))
    (sft_ws.models_dir / "squatter").mkdir()
    with pytest.raises(UserError, match="squatter already exists"):
        train_sft(sft_ws, _options(text_file, policy, name="squatter"))
    with pytest.raises(UserError, match="exactly one source"):
        train_sft(sft_ws, SftOptions(policy=str(policy)))
    assert len(_runs(sft_ws)) == before


def test_a_crash_marks_the_run_failed_and_leaves_no_model(sft_ws, policy, text_file) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_sft(
            sft_ws,
            _options(text_file, policy),
            callbacks=[_Recorder(stop_at=1, error=RuntimeError("disk on fire"))],
        )
    (run,) = _runs(sft_ws)
    assert run.status == "failed" and run.metrics["error"] == "disk on fire"
    assert run.output_model_id is None
    assert [path.name for path in sft_ws.models_dir.iterdir()] == []
    # It died before its first checkpoint, so there is nothing to resume.
    with pytest.raises(UserError, match=f"run {run.id} stopped before its first checkpoint"):
        train_sft(sft_ws, SftOptions(progress=False), resume=True)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_continues_a_killed_run_from_its_checkpoint(
    sft_ws, policy, text_file, lora: bool
) -> None:
    ws = _reopen(sft_ws, **{"sft.checkpoint_every": 2})
    killer = _Recorder(stop_at=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_sft(ws, _options(text_file, policy, max_steps=4, lora=lora), callbacks=[killer])
    (run,) = _runs(ws)
    assert run.status == "cancelled" and killer.steps == [1, 2, 3]
    assert (run_checkpoints(ws, run.id) / "checkpoint-2").is_dir()

    # Resuming uses the run's recorded settings, not the workspace's current ones.
    resumer = _Recorder()
    result = train_sft(sft_ws, SftOptions(progress=False), resume=True, callbacks=[resumer])
    assert result.run_id == run.id and resumer.steps == [3, 4]
    assert result.metrics["steps"] == 4 and result.metrics["resumed_from_step"] == 2
    (run,) = _runs(ws)
    assert (run.status, run.progress, run.output_model_id) == ("succeeded", 1.0, result.model_id)
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    assert result.name == f"sft-{run.id}" and (result.path / weights).is_file()
    assert _model(ws, result.name).config["lora"] is lora
    # The resumed run ends where an uninterrupted one does: weights and optimizer came back.
    straight = train_sft(ws, _options(text_file, policy, max_steps=4, lora=lora, name="straight"))
    resumed, uninterrupted = load_file(result.path / weights), load_file(straight.path / weights)
    for key, tensor in uninterrupted.items():
        assert torch.allclose(resumed[key], tensor, atol=1e-6), key
    with pytest.raises(UserError, match="no unfinished sft run"):
        train_sft(ws, SftOptions(progress=False), resume=True)
    ws.engine.dispose()


def test_builtin_reviews_fine_tune(sqlite_workspace, policy) -> None:
    ws = _reopen(sqlite_workspace, **{"sft.builtin_n": 10})
    result = train_sft(
        ws, SftOptions(builtin="imdb", policy=str(policy), max_steps=1, progress=False)
    )
    assert result.metrics["train_examples"] + result.metrics["eval_examples"] == 10
    with ws.sessions() as session:
        assert session.get(TrainingRun, result.run_id).config["builtin"] == "imdb"
    with pytest.raises(UserError, match="Unknown built-in demonstration set 'yelp'"):
        train_sft(ws, SftOptions(builtin="yelp", policy=str(policy)))
    ws.engine.dispose()


def test_no_policy_given_means_the_current_one(sft_ws, policy, text_file) -> None:
    with transaction(sft_ws.sessions) as session:
        start = resolve_policy(session, str(policy), sft_ws.models_dir)
        start_id = start.id
    result = train_sft(sft_ws, _options(text_file, None, max_steps=1))
    assert _model(sft_ws, result.name).parent_id == start_id
