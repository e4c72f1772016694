"""`rlhf train reward`: fit a Bradley-Terry reward model on an export with TRL's
RewardTrainer, save it as a plain transformers folder and register it.

The inputs are encoded here, by the same RewardInputFormat that RewardScorer uses, and
handed to the trainer as token ids: TRL would otherwise format them its own way and drop
pairs longer than max_length, where we keep the end of the response instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_train.config import LoraSettings, RewardSettings
from rlhf_train.errors import UserError
from rlhf_train.export.reader import PreferenceExport, read_export
from rlhf_train.models.loading import configure_threads, resolve_device
from rlhf_train.models.lora import lora_config
from rlhf_train.models.publish import NewModel, check_new_model
from rlhf_train.reward.backbone import Backbone, load_sequence_classifier, resolve_backbone
from rlhf_train.reward.evaluate import diagnose
from rlhf_train.reward.format import RewardInputFormat, infer_style
from rlhf_train.reward.scorer import RewardScorer
from rlhf_train.runs.lifecycle import (
    TrainedModel,
    new_model_name,
    publish_trained,
    recorded_run,
    resume_point,
)
from rlhf_train.runs.record import RunProgress, run_checkpoints
from rlhf_train.runs.trainer_args import last_checkpoint, quiet_unless, section_trainer_args
from rlhf_train.workspace import Workspace

if TYPE_CHECKING:
    from trl import RewardTrainer


@dataclass(frozen=True)
class RewardOptions:
    data: str
    backbone: str | None = None  # None: the workspace's models.reward_backbone
    name: str | None = None  # None: reward-<run id>
    lora: bool = False
    use_margin: bool = False
    max_steps: int | None = None
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        return asdict(self)


# The reward model's result is the one every trainer gives; `report` holds its
# diagnostics on the export's test split (a RewardReport), when there is one.
RewardResult = TrainedModel


def _encoded(
    split: Dataset, tokenizer, input_format: RewardInputFormat, use_margin: bool
) -> Dataset:
    columns: dict[str, list] = {
        "chosen_ids": input_format.encode(tokenizer, split["prompt"], split["chosen"]),
        "rejected_ids": input_format.encode(tokenizer, split["prompt"], split["rejected"]),
    }
    if use_margin:
        if "margin" not in split.column_names:
            raise UserError(
                "--use-margin needs a margin column, and this export has none; "
                "leave out --use-margin or export again with `rlhf export`."
            )
        columns["margin"] = [float(m) for m in split["margin"]]
    return Dataset.from_dict(columns)


@dataclass
class _Prepared:
    """Everything a run needs, checked before the run is recorded."""

    export: PreferenceExport
    train_split: Dataset
    test_split: Dataset | None
    backbone: Backbone
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    input_format: RewardInputFormat
    peft_config: Any


def _prepare(workspace: Workspace, options: RewardOptions) -> _Prepared:
    """Check everything a user can get wrong; nothing is recorded or written yet."""
    export = read_export(workspace, options.data)
    train_split = export.split("train")
    with workspace.sessions() as session:
        backbone = resolve_backbone(
            session,
            options.backbone or workspace.config.models.reward_backbone,
            workspace.models_dir,
        )
    if options.name is not None:
        check_new_model(workspace, options.name)
    model, tokenizer = load_sequence_classifier(backbone.location)
    input_format = RewardInputFormat(infer_style(tokenizer), workspace.config.reward.max_length)
    input_format.prepare(tokenizer)
    peft_config = lora_config(model, workspace.config.lora, "SEQ_CLS") if options.lora else None
    return _Prepared(
        export,
        train_split,
        export.splits.get("test"),
        backbone,
        model,
        tokenizer,
        input_format,
        peft_config,
    )


def _run_config(workspace: Workspace, options: RewardOptions, prepared: _Prepared) -> dict:
    config = {
        "options": options.recorded(),
        "settings": asdict(workspace.config.reward),
        "backbone": asdict(prepared.backbone),
        "export": str(prepared.export.path),
    }
    if options.lora:
        config["lora"] = asdict(workspace.config.lora)
    return config


def train_reward(
    workspace: Workspace, options: RewardOptions, resume: bool = False, run_id: int | None = None
) -> RewardResult | None:
    """Train, save, diagnose and register a reward model; None on the processes other
    than the main one under `accelerate launch`.

    With `resume`, continue run `run_id` (default: the newest unfinished reward run)
    from its last checkpoint, with the options and settings it was started with.
    """
    resumed_run = None
    if resume:
        previous, _ = resume_point(workspace, "reward", run_id)
        options = RewardOptions(**previous.config["options"])
        settings = RewardSettings(**previous.config["settings"])
        lora = LoraSettings(**previous.config.get("lora", asdict(workspace.config.lora)))
        workspace = replace(workspace, config=replace(workspace.config, reward=settings, lora=lora))
        resumed_run = previous.id
    configure_threads(workspace.config.runtime.threads)
    device = resolve_device(workspace.config.runtime.device)
    prepared = _prepare(workspace, options)
    config = _run_config(workspace, options, prepared)
    return recorded_run(
        workspace,
        "reward",
        config,
        lambda run: _train(workspace, options, prepared, device, run, resumed_run is not None),
        export_id=prepared.export.export_id,
        resumed_run=resumed_run,
    )


def reward_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_data: Dataset,
    settings: RewardSettings,
    *,
    output_dir: Path,
    device: str,
    max_steps: int | None = None,
    progress: bool = False,
    peft_config: Any = None,
    callbacks: list | None = None,
) -> RewardTrainer:
    """TRL's RewardTrainer with the [reward] settings, on pairs already encoded as
    chosen_ids / rejected_ids (see RewardInputFormat.encode); call .train() on it.

    `rlhf train reward` and bench/labels.py both train through it, so a benchmark's
    reward model is trained exactly as the loop's is.
    """
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(
        **section_trainer_args(
            settings, output_dir=output_dir, device=device, max_steps=max_steps, progress=progress
        ),
        # Inputs are already cut to max_length; TRL's own limit would drop pairs.
        max_length=None,
        center_rewards_coefficient=settings.center_coefficient or None,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    quiet_unless(trainer, progress)
    return trainer


def _train(
    workspace: Workspace,
    options: RewardOptions,
    prepared: _Prepared,
    device: str,
    run_id: int,
    resume: bool,
) -> RewardResult | None:
    settings = workspace.config.reward
    name = new_model_name(workspace, options.name, "reward", run_id)
    export, backbone = prepared.export, prepared.backbone
    tokenizer, input_format = prepared.tokenizer, prepared.input_format
    train_data = _encoded(prepared.train_split, tokenizer, input_format, options.use_margin)

    checkpoints = run_checkpoints(workspace, run_id)
    trainer = reward_trainer(
        prepared.model,
        tokenizer,
        train_data,
        settings,
        output_dir=checkpoints,
        device=device,
        max_steps=options.max_steps,
        progress=options.progress,
        peft_config=prepared.peft_config,
        callbacks=[RunProgress(workspace, run_id)],
    )
    checkpoint = last_checkpoint(checkpoints) if resume else None
    outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if not trainer.is_world_process_zero():
        return None

    trained = trainer.model
    if options.lora:
        # A merged model loads with plain transformers; an adapter would need peft.
        trained = trained.merge_and_unload()
    trained.eval()
    metrics: dict[str, Any] = {
        "train_loss": outcome.training_loss,
        "train_steps": outcome.global_step,
        "train_pairs": len(train_data),
        "train_runtime_s": outcome.metrics.get("train_runtime"),
        # Each example is a pair: two sequences through the model.
        "train_pairs_per_s": outcome.metrics.get("train_samples_per_second"),
        "backbone": backbone.description,
        "export": str(export.path),
        "input_format": asdict(input_format),
    }
    if checkpoint is not None:
        metrics["resumed_from_step"] = int(checkpoint.name.rsplit("-", 1)[1])
    report = None
    scorer = RewardScorer(trained, tokenizer, input_format, batch_size=settings.batch_size * 2)
    if prepared.test_split is not None and len(prepared.test_split):
        report = diagnose(
            scorer,
            prepared.test_split,
            workspace.root / "reports" / name,
            {"model": name, "export": str(export.path)},
        )
        metrics["test_accuracy"] = report.diagnostics["accuracy"]
        metrics["test_pairs"] = report.diagnostics["n_pairs"]
        metrics["length_bias_alarm"] = report.diagnostics["length"]["alarm"]
        metrics["calibration_ece"] = report.diagnostics["calibration"]["ece"]

    def write(folder: Path) -> None:
        trained.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        input_format.save(folder)

    new = NewModel(
        name=name,
        kind="reward",
        metrics=metrics,
        config={
            "export_id": export.export_id,
            "export_hash": export.manifest.get("content_hash"),
            "options": options.recorded(),
            "settings": asdict(settings),
        },
        parent_id=backbone.parent_id,
        training_run_id=run_id,
    )
    result = publish_trained(workspace, run_id, new, write)
    result.report = report
    return result
