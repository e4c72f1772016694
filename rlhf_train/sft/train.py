"""Supervised fine-tuning (SFT) of a policy on demonstrations, with TRL's SFTTrainer.

InstructGPT's loop starts from a policy fine-tuned on demonstrations of the wanted
behaviour; this is that step. A run is recorded in training_runs (its settings, progress
and outcome), checkpoints into the workspace so that `--resume` can continue it after a
crash, measures the held-out loss before and after training, and registers its result
as a child of the policy it started from: a full model, or a LoRA adapter on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasets import Dataset
from transformers import TrainerCallback

from rlhf_train.config import LoraSettings, SftSettings
from rlhf_train.errors import UserError
from rlhf_train.models.loading import configure_threads, load_policy, resolve_device
from rlhf_train.models.lora import lora_config
from rlhf_train.models.publish import NewModel, check_new_model
from rlhf_train.models.source import policy_to_train
from rlhf_train.runs.lifecycle import (
    TrainedModel,
    new_model_name,
    publish_trained,
    recorded_run,
    resume_point,
)
from rlhf_train.runs.record import RunProgress, run_checkpoints
from rlhf_train.runs.trainer_args import quiet_unless, section_trainer_args
from rlhf_train.sft.demonstrations import (
    CONVERSATIONAL,
    PROMPT_COMPLETION,
    builtin_demonstrations,
    demonstration_format,
    read_demonstrations,
    split_held_out,
)
from rlhf_train.workspace import Workspace

T = TypeVar("T")
_RECORDED = ("data", "builtin", "policy", "name", "lora", "promote", "max_steps")


@dataclass(frozen=True)
class SftOptions:
    """What one `rlhf sft` asks for; the hyperparameters come from workspace.config.sft."""

    data: str | None = None  # a .txt, .csv or .jsonl file of demonstrations
    builtin: str | None = None  # or a packaged set: imdb, rotten_tomatoes
    policy: str | None = None  # registered name, built-in, folder or hub id; None: current
    name: str | None = None  # of the new policy; None: sft-RUN_ID
    lora: bool = False
    promote: bool = False
    max_steps: int | None = None
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        """The options as a training run stores them: enough to run it again or resume it."""
        values = {key: getattr(self, key) for key in _RECORDED}
        if self.data is not None:
            values["data"] = str(Path(self.data).expanduser().resolve())
        return values

    @classmethod
    def from_recorded(cls, recorded: Mapping[str, Any], progress: bool = True) -> SftOptions:
        return cls(**{key: recorded.get(key) for key in _RECORDED}, progress=progress)


@dataclass(frozen=True)
class _Setup:
    """What a run is asked to do: new, or the recorded wishes of a run to resume."""

    options: SftOptions
    sft: SftSettings
    lora: LoraSettings
    run_id: int | None  # the run being resumed
    checkpoint: Path | None


@dataclass
class _Prepared:
    """Everything a run needs, checked before any row is written or step is taken."""

    setup: _Setup
    device: str
    shape: str
    train_set: Dataset
    held_out: Dataset
    start_id: int
    location: str  # of the starting policy
    model: Any
    tokenizer: Any
    peft_config: Any
    config: dict[str, Any]  # as recorded with the run and the new model


def _check_options(options: SftOptions) -> None:
    if (options.data is None) == (options.builtin is None):
        raise UserError(
            "Pass exactly one source of demonstrations: a file (.txt, .csv or .jsonl) or "
            "--builtin imdb|rotten_tomatoes."
        )
    if options.max_steps is not None and options.max_steps < 1:
        raise UserError(f"--max-steps is {options.max_steps}; pass 1 or more, or leave it out.")


def _setup(
    workspace: Workspace, options: SftOptions, resume: bool, resume_run_id: int | None
) -> _Setup:
    if not resume:
        return _Setup(options, workspace.config.sft, workspace.config.lora, None, None)
    run, checkpoint = resume_point(workspace, "sft", resume_run_id)
    recorded = run.config
    return _Setup(
        SftOptions.from_recorded(recorded, progress=options.progress),
        SftSettings(**recorded["sft"]),
        LoraSettings(**(recorded.get("lora_settings") or {})),
        run.id,
        checkpoint,
    )


def _demonstrations(options: SftOptions, sft: SftSettings) -> tuple[Dataset, str]:
    """The demonstrations and how to name their source in messages."""
    if options.data is not None:
        return read_demonstrations(options.data), options.data
    dataset = builtin_demonstrations(options.builtin, sft.builtin_n, sft.seed)
    return dataset, f"The built-in set {options.builtin}"


def _perplexity(loss: float) -> float | None:
    # JSON columns take no infinities; a loss this large means the model is broken anyway.
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else None


def _prepare(workspace: Workspace, setup: _Setup, device: str) -> _Prepared:
    options = setup.options
    _check_options(options)
    if options.name is not None:
        check_new_model(workspace, options.name)
    dataset, source = _demonstrations(options, setup.sft)
    shape = demonstration_format(dataset)
    train_set, held_out = split_held_out(dataset, setup.sft.eval_fraction, setup.sft.seed, source)
    start_id, start_name, location = policy_to_train(workspace, options.policy)
    model, tokenizer = load_policy(location, device)
    if shape == CONVERSATIONAL and not tokenizer.chat_template:
        raise UserError(
            f"{source} holds chat messages but the policy {start_name!r} has no chat template; "
            "use text or prompt-completion demonstrations, or a policy with a chat template."
        )
    peft_config = lora_config(model, setup.lora, "CAUSAL_LM") if options.lora else None
    config = options.recorded() | {
        "policy": start_name,
        "format": shape,
        "examples": len(dataset),
        "sft": asdict(setup.sft),
        "lora_settings": asdict(setup.lora) if options.lora else None,
    }
    return _Prepared(
        setup,
        device,
        shape,
        train_set,
        held_out,
        start_id,
        location,
        model,
        tokenizer,
        peft_config,
        config,
    )


def train_sft(
    workspace: Workspace,
    options: SftOptions,
    resume_run_id: int | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainedModel:
    """Fine-tune a policy on demonstrations and register the result; see the module doc.

    With `resume`, continue run `resume_run_id` (else the newest unfinished SFT run) from
    its last checkpoint with the options and settings it recorded; `options` then only
    says whether to show progress. `callbacks` are added to the Trainer's.
    """
    configure_threads(workspace.config.runtime.threads)
    device = resolve_device(workspace.config.runtime.device)
    # Everything a user can get wrong is checked before a run is recorded.
    prepared = _prepare(workspace, _setup(workspace, options, resume, resume_run_id), device)
    return recorded_run(
        workspace,
        "sft",
        prepared.config,
        lambda run_id: _run(workspace, prepared, run_id, callbacks),
        resumed_run=prepared.setup.run_id,
    )


def _run(
    workspace: Workspace,
    prepared: _Prepared,
    run_id: int,
    callbacks: Sequence[TrainerCallback],
) -> TrainedModel:
    options = prepared.setup.options
    name = new_model_name(workspace, options.name, "sft", run_id)
    trainer = _build_trainer(workspace, prepared, run_id, callbacks)
    before = trainer.evaluate()
    checkpoint = prepared.setup.checkpoint
    quiet_unless(trainer, options.progress)
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    after = trainer.evaluate()
    metrics = {
        "eval_loss_before": before["eval_loss"],
        "perplexity_before": _perplexity(before["eval_loss"]),
        "eval_loss_after": after["eval_loss"],
        "perplexity_after": _perplexity(after["eval_loss"]),
        "train_loss": output.training_loss,
        "train_runtime": output.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_examples": len(prepared.train_set),
        "eval_examples": len(prepared.held_out),
        "resumed_from_step": int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None,
    }
    if not trainer.is_world_process_zero():
        return TrainedModel(name, None, workspace.models_dir / name, run_id, metrics)
    lora = {"base_model": prepared.location} if options.lora else {}
    new = NewModel(
        name=name,
        kind="policy",
        metrics=metrics,
        config=prepared.config | lora,
        parent_id=prepared.start_id,
        training_run_id=run_id,
        promote=options.promote,
    )
    return publish_trained(workspace, run_id, new, lambda staging: _save(trainer, staging))


def _build_trainer(
    workspace: Workspace,
    prepared: _Prepared,
    run_id: int,
    callbacks: Sequence[TrainerCallback],
) -> Any:
    from trl import SFTConfig, SFTTrainer

    sft, options = prepared.setup.sft, prepared.setup.options
    args = SFTConfig(
        **section_trainer_args(
            sft,
            output_dir=run_checkpoints(workspace, run_id),
            device=prepared.device,
            max_steps=options.max_steps,
            progress=options.progress,
        ),
        max_length=sft.max_length,
        packing=False,
        # Prompt-completion data trains on the completion only, as in TRL's documentation;
        # text and chat data train on every token.
        completion_only_loss=prepared.shape == PROMPT_COMPLETION,
    )
    return SFTTrainer(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train_set,
        eval_dataset=prepared.held_out,
        processing_class=prepared.tokenizer,
        peft_config=prepared.peft_config,
        callbacks=[RunProgress(workspace, run_id), *callbacks],
    )


def _save(trainer: Any, folder: Path) -> None:
    """The trained model (or adapter) and its tokenizer, as save_pretrained writes them."""
    trainer.save_model(str(folder))
    # The Trainer adds its pickled arguments; a model folder needs no pickle.
    (folder / "training_args.bin").unlink(missing_ok=True)
