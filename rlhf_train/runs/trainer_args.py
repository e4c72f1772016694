"""The Hugging Face Trainer settings every training command shares.

One place decides how a run uses the hardware (CPU threads, CUDA, mixed precision),
how often it checkpoints and where, so SFT, reward and the TRL policy trainers behave
the same way and resume the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def section_trainer_args(
    section: Any, *, output_dir: Path, device: str, max_steps: int | None, progress: bool
) -> dict[str, Any]:
    """common_trainer_args with the hyperparameters a settings section holds ([sft] and
    [reward] both have epochs, learning_rate, batch_size, seed and checkpoint_every)."""
    return common_trainer_args(
        output_dir=output_dir,
        device=device,
        epochs=section.epochs,
        learning_rate=section.learning_rate,
        batch_size=section.batch_size,
        seed=section.seed,
        checkpoint_every=section.checkpoint_every,
        max_steps=max_steps,
        progress=progress,
    )


def common_trainer_args(
    *,
    output_dir: Path,
    device: str,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    seed: int,
    checkpoint_every: int,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for a TrainingArguments subclass (SFTConfig, RewardConfig...)."""
    on_gpu = device.startswith("cuda")
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "max_steps": max_steps if max_steps is not None else -1,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "seed": seed,
        "data_seed": seed,
        "use_cpu": device == "cpu",
        # fp32 weights with bf16 autocast where the GPU has it; CPUs train in fp32.
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "fp16": False,
        # Checkpointing trades compute for memory; small models on CPU only lose time.
        "activation_checkpointing": False,
        "save_strategy": "steps",
        "save_steps": checkpoint_every,
        "save_total_limit": 1,
        "eval_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": 10,
        "logging_first_step": True,
        "report_to": "none",
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        "warmup_steps": 0,
        "lr_scheduler_type": "linear",
    }


# The file each kind of checkpoint writes last: once it is there and whole, so is the rest.
CHECKPOINT_COMPLETE_MARKERS = ("trainer_state.json", "ppo_progress.json")


def checkpoint_is_complete(folder: Path) -> bool:
    """Whether `folder` holds a whole checkpoint. A process killed while writing one (a
    worker's SIGKILL, a lost machine) leaves the folder with truncated or missing files and
    without its marker; resuming from it would fail on the truncated file."""
    for marker in CHECKPOINT_COMPLETE_MARKERS:
        try:
            json.loads((folder / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return True
    return False


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-N` folders in `output_dir`, complete or not, oldest step first."""
    if not output_dir.is_dir():
        return []
    return sorted(
        (int(path.name.rsplit("-", 1)[1]), path)
        for path in output_dir.glob("checkpoint-*")
        if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    )


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder a trainer left in `output_dir`, if any."""
    complete = [path for _, path in checkpoint_folders(output_dir) if checkpoint_is_complete(path)]
    return complete[-1] if complete else None


def quiet_unless(trainer, progress: bool) -> None:
    """Without progress output the Trainer would print every log record instead of a
    bar; the records are in the run's log file already."""
    from transformers import PrinterCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
