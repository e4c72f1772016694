"""TRL's DPO, RLOO and GRPO trainers as three of the four optimizers behind `rlhf train`.

Each run_* function maps the workspace settings onto a TRL config, trains job.model with
the Hugging Face Trainer (checkpoints, resume, DDP under `accelerate launch`) and returns
the trained model and a summary of its log; optimize.py saves and registers the result.
Runs log every step, as PPO does, so that the first and last logged values in the
summary describe the starting and the final policy rather than averages over windows.
"""

from __future__ import annotations

import math
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback

from db.conversations import plain_text_prompt
from rlhf_train.distributed import is_main_process
from rlhf_train.errors import UserError
from rlhf_train.policy.deadline import DeadlineCallback
from rlhf_train.policy.job import PolicyJob, print_samples
from rlhf_train.reward.source import score_function
from rlhf_train.runs.record import RunProgress
from rlhf_train.runs.trainer_args import common_trainer_args, quiet_unless

# Summary name -> the key TRL's RLOO and GRPO trainers log it under; the names match
# PPO's summary, so runs of every algorithm compare on the runs page.
GROUP_LOGGED = {
    "score_mean": "reward",
    # Per completion token (PPO's kl is per response), and only logged when kl_coef > 0.
    "kl": "kl",
    "entropy": "entropy",
    "response_length": "completions/mean_length",
}
DPO_LOGGED = {
    "reward_accuracy": "rewards/accuracies",
    "reward_margin": "rewards/margins",
    "loss": "loss",
}


def run_dpo(job: PolicyJob) -> tuple[PreTrainedModel, dict[str, Any]]:
    """DPO on the export's train split, with optimize.kl_coef as beta.

    With LoRA, the reference is the same model with its adapter disabled (ref_model=None
    and a peft_config); without, TRL loads a frozen copy from the policy's folder.
    """
    from trl import DPOConfig, DPOTrainer

    pairs = job.export.split("train").select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(
        **_trainer_args(job, _dpo_steps(job, len(pairs)), job.config.optimize.batch_size),
        beta=job.config.optimize.kl_coef,
        max_length=job.config.dpo.max_length,
    )
    trainer = DPOTrainer(
        model=job.model,
        ref_model=None,
        args=args,
        train_dataset=pairs,
        processing_class=job.tokenizer,
        peft_config=job.peft_config,
        callbacks=_callbacks(job),
    )
    metrics = _train(trainer, job) | _first_and_last(trainer, DPO_LOGGED)
    return trainer.model, metrics | {"train_pairs": len(pairs)}


def run_rloo(job: PolicyJob) -> tuple[PreTrainedModel, dict[str, Any]]:
    """REINFORCE leave-one-out: each response's baseline is the mean score of its siblings."""
    from trl import RLOOConfig, RLOOTrainer

    return _run_group(job, RLOOConfig, RLOOTrainer)


def run_grpo(job: PolicyJob) -> tuple[PreTrainedModel, dict[str, Any]]:
    """GRPO: each response's advantage is its score standardized within its group."""
    from trl import GRPOConfig, GRPOTrainer

    return _run_group(job, GRPOConfig, GRPOTrainer)


def _run_group(job: PolicyJob, config_class, trainer_class) -> tuple[PreTrainedModel, dict]:
    """RLOO and GRPO both sample num_generations responses per prompt, score them and
    compare each with its group; they differ in the advantage and where the KL goes."""
    shared, group = job.config.optimize, job.config.group
    # TRL's batch sizes count completions, ours prompts: a step samples batch_size
    # prompts per process and num_generations responses for each, so every process holds
    # whole groups and the generation batch divides by num_generations on any world size.
    args = config_class(
        **_trainer_args(job, job.steps, shared.batch_size * group.num_generations),
        num_generations=group.num_generations,
        max_completion_length=shared.max_new_tokens,
        temperature=shared.temperature,
        beta=shared.kl_coef,
        # The reference and the sampled policy must agree on the starting policy's
        # log-probabilities for the KL to mean anything; PPO disables dropout too.
        disable_dropout=True,
    )
    trainer = trainer_class(
        model=job.model,
        reward_funcs=_reward_function(job),
        args=args,
        train_dataset=_prompt_dataset(job, shared.batch_size),
        processing_class=job.tokenizer,
        peft_config=job.peft_config,
        callbacks=_callbacks(job),
    )
    metrics = _train(trainer, job) | _first_and_last(trainer, GROUP_LOGGED)
    completions = shared.batch_size * group.num_generations * trainer.accelerator.num_processes
    return trainer.model, metrics | {"episodes": metrics["steps"] * completions}


def _trainer_args(job: PolicyJob, steps: int, batch_size: int) -> dict[str, Any]:
    """The TrainingArguments every TRL policy trainer gets from the workspace."""
    shared = job.config.optimize
    return common_trainer_args(
        output_dir=job.checkpoints,
        device=job.device,
        epochs=1,  # never read: max_steps is always set (see _dpo_steps for dpo.epochs)
        learning_rate=shared.learning_rate,
        batch_size=batch_size,
        seed=shared.seed,
        checkpoint_every=shared.checkpoint_every,
        max_steps=steps,
        progress=job.options.progress,
    ) | {"logging_steps": 1, "lr_scheduler_type": shared.lr_schedule}


def _dpo_steps(job: PolicyJob, pairs: int) -> int:
    """optimize.steps, or fewer when dpo.epochs passes over the pairs take fewer."""
    per_step = job.config.optimize.batch_size * _processes()
    per_epoch = math.ceil(pairs / per_step)
    return max(1, min(job.steps, math.ceil(job.config.dpo.epochs * per_epoch)))


def _processes() -> int:
    """How many processes `accelerate launch` started (1 without it)."""
    from accelerate import PartialState

    return PartialState().num_processes


def _callbacks(job: PolicyJob) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [
        RunProgress(job.workspace, job.run_id),
        DeadlineCallback(job.deadline),
    ]
    if job.options.report_to == "tensorboard" and is_main_process():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        # Given explicitly rather than through report_to, whose default folder lies in the
        # checkpoints, deleted when the run succeeds; PPO writes to the same place.
        folder = job.workspace.logs_dir / f"run-{job.run_id}-tensorboard"
        callbacks.append(TensorBoardCallback(SummaryWriter(str(folder))))
    return callbacks


def _train(trainer: Trainer, job: PolicyJob) -> dict[str, Any]:
    quiet_unless(trainer, job.options.progress)
    checkpoint = str(job.resume_from) if job.resume_from else None
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {
        "steps": outcome.global_step,
        "train_loss": outcome.training_loss,
        "train_runtime_s": outcome.metrics.get("train_runtime"),
    }
    if job.resume_from is not None:
        metrics["resumed_from_step"] = int(job.resume_from.name.rsplit("-", 1)[1])
    return metrics


def _first_and_last(trainer: Trainer, logged: dict[str, str]) -> dict[str, float]:
    """first_NAME and last_NAME for each value the trainer logged; absent ones are left out
    (the CLI prints a score line only when the keys exist)."""
    summary: dict[str, float] = {}
    for name, key in logged.items():
        values = [
            record[key]
            for record in trainer.state.log_history
            if isinstance(record.get(key), int | float) and math.isfinite(record[key])
        ]
        if values:
            summary[f"first_{name}"], summary[f"last_{name}"] = values[0], values[-1]
    return summary


def _prompt_dataset(job: PolicyJob, batch_size: int) -> Dataset:
    """A `prompt` column TRL samples from: chat prompts as conversations, the rest as text.

    TRL decides per batch from its first prompt, and a column holds one type, so a run
    takes prompts of one kind. Fewer prompts than one step's batch are cycled, since TRL
    drops an incomplete batch and would otherwise have nothing to train on.
    """
    prompts = job.prompts
    chat = {prompt.chat for prompt in prompts} if job.tokenizer.chat_template else {False}
    if len(chat) > 1:
        raise UserError(
            "The prompts mix chat and plain ones, and TRL's trainers take one kind per run; "
            "pass --prompts FILE (with --chat for chat prompts) or use ppo."
        )
    if chat == {True}:
        column = [
            prompt.messages or [{"role": "user", "content": prompt.text}] for prompt in prompts
        ]
    else:
        # Without a template a conversation is its rendering, as sampling.encode_prompt has it.
        column = [
            plain_text_prompt(prompt.messages) if prompt.messages else prompt.text
            for prompt in prompts
        ]
    needed = batch_size * _processes()
    column = column * math.ceil(needed / len(column))
    return Dataset.from_dict({"prompt": column})


def _text(message: str | list[dict[str, str]]) -> str:
    """The text of a plain prompt or completion, or of a conversation's last message."""
    return message if isinstance(message, str) else message[-1]["content"]


def _reward_function(job: PolicyJob):
    """TRL's reward function: the job's reward model or Python function on the prompt and
    response texts. It also writes PPO's sample tables to the run log, every
    optimize.samples_every steps and at step 1, from the main process's share."""
    scorer = score_function(job.reward, job.device)
    every = job.config.optimize.samples_every
    main = is_main_process()

    def score(prompts: list, completions: list, trainer_state, **_: Any) -> list[float]:
        texts = [_text(p) for p in prompts]
        responses = [_text(c) for c in completions]
        scores = scorer(texts, responses).tolist()
        # Scores are computed before the step's update: they belong to the step about to run.
        step = trainer_state.global_step + 1
        if main and (step == 1 or step % every == 0):
            samples = [
                {"prompt": p, "response": r, "score": round(s, 4)}
                for p, r, s in zip(texts, responses, scores, strict=True)
            ]
            job.log.write({"step": step, "samples": samples})
            if job.options.progress:
                print_samples(step, samples)
        return scores

    return score
