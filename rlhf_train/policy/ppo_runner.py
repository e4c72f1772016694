"""Our PPO (rlhf_train/policy/ppo.py) as one of the four optimizers behind `rlhf train`: the
settings mapped onto PPOConfig, the step loop with its log, sample tables, checkpoints,
TensorBoard and the early stop on KL."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from transformers import PreTrainedModel

from rlhf_train.distributed import is_main_process
from rlhf_train.models.loading import load_policy
from rlhf_train.policy.job import PolicyJob, print_samples
from rlhf_train.policy.ppo import PPOConfig, PPOTrainer
from rlhf_train.reward.source import score_function


def ppo_config(job: PolicyJob) -> PPOConfig:
    # The schedule runs over this run's steps (--max-steps or optimize.steps).
    return replace(PPOConfig.from_settings(job.config.optimize, job.config.ppo), steps=job.steps)


class _TensorBoard:
    def __init__(self, folder: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(folder)

    def write(self, stats: dict[str, Any]) -> None:
        for key, value in stats.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(f"ppo/{key}", value, stats["step"])
        for phase, seconds in stats.get("phase_seconds", {}).items():
            self.writer.add_scalar(f"ppo_seconds/{phase}", seconds, stats["step"])
        self.writer.flush()


def run_ppo(job: PolicyJob) -> tuple[PreTrainedModel, dict[str, Any]]:
    import torch
    from peft import get_peft_model

    config = ppo_config(job)
    torch.manual_seed(config.seed)
    policy = get_peft_model(job.model, job.peft_config) if job.peft_config else job.model
    reference = None
    if job.reference_location is not None:
        reference, _ = load_policy(job.reference_location, job.device)
    trainer = PPOTrainer(
        config,
        policy,
        job.tokenizer,
        score_function(job.reward, job.device),
        job.prompts,
        _accelerator(job),
        reference=reference,
    )
    if job.resume_from is not None:
        trainer.load_checkpoint(str(job.resume_from))
    main = is_main_process()
    board = (
        _TensorBoard(str(job.workspace.logs_dir / f"run-{job.run_id}-tensorboard"))
        if main and job.options.report_to == "tensorboard"
        else None
    )
    shared = job.config.optimize
    first: dict[str, Any] | None = None
    last: dict[str, Any] = {}
    stopped_early = None
    while trainer.step_count < job.steps:
        stats = trainer.step()
        samples = stats.pop("samples")
        first = first or stats
        last = stats
        if main:
            job.log.write(stats)
            job.log.progress(trainer.step_count, job.steps)
            if board is not None:
                board.write(stats)
            if trainer.step_count % shared.samples_every == 0 or trainer.step_count == 1:
                job.log.write({"step": trainer.step_count, "samples": samples})
                if job.options.progress:
                    print_samples(trainer.step_count, samples)
            if job.options.progress:
                print(
                    f"step {trainer.step_count}/{job.steps}: score {stats['score_mean']:.4f} "
                    f"kl {stats['kl']:.3f} entropy {stats['entropy']:.3f} "
                    f"{stats['seconds']:.1f}s"
                )
        if config.kl_limit is not None and stats["kl"] > config.kl_limit:
            stopped_early = (
                f"Stopped at step {trainer.step_count}: the KL to the reference policy "
                f"({stats['kl']:.2f}) passed ppo.kl_limit ({config.kl_limit}); lower the "
                "learning rate or raise optimize.kl_coef, or raise the limit."
            )
            break
        if job.deadline.passed():
            break
        if trainer.step_count % shared.checkpoint_every == 0 and trainer.step_count < job.steps:
            trainer.save_checkpoint(str(job.checkpoints / f"checkpoint-{trainer.step_count}"))
    metrics = _summary(first, last, trainer)
    if stopped_early:
        metrics["stopped_early"] = stopped_early
        if main:
            print(stopped_early)
    return trainer.policy, metrics


def _accelerator(job: PolicyJob):
    from accelerate import Accelerator

    return Accelerator(
        cpu=job.device == "cpu",
        gradient_accumulation_steps=job.config.ppo.gradient_accumulation_steps,
        mixed_precision="bf16" if job.device.startswith("cuda") and _bf16() else "no",
    )


def _bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _summary(first: dict | None, last: dict, trainer: PPOTrainer) -> dict[str, Any]:
    first = first or {}
    keys = ("score_mean", "kl", "entropy", "response_length", "seconds")
    summary: dict[str, Any] = {f"first_{k}": first.get(k) for k in keys}
    summary |= {f"last_{k}": last.get(k) for k in keys}
    summary |= {"steps": trainer.step_count, "episodes": trainer.episodes}
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in summary.items()
    }
