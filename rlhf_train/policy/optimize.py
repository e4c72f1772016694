"""`rlhf train ppo|dpo|rloo|grpo`: one interface to the four policy optimizers.

Every algorithm takes the same options (OptimizeOptions), reads the same settings
(`[optimize]`, plus its own section), is recorded as a training run the same way, and
gives the same result (OptimizeResult): a new policy, saved and registered with its
lineage (parent policy, reward model, export, settings, metrics). The round loop can
therefore switch optimizer with a flag. The algorithms themselves live in
ppo_runner.py (ours) and trl_runner.py (TRL's DPO, RLOO and GRPO trainers); the
types they share are in job.py.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rlhf_train.config import Config
from rlhf_train.distributed import is_main_process
from rlhf_train.errors import UserError
from rlhf_train.export.reader import read_export
from rlhf_train.models.loading import configure_threads, load_policy, resolve_device
from rlhf_train.models.lora import lora_config
from rlhf_train.models.publish import NewModel, check_new_model
from rlhf_train.models.source import lineage_start, policy_to_train
from rlhf_train.policy.deadline import Deadline
from rlhf_train.policy.job import (
    ALGORITHMS,
    SECTIONS,
    Algorithm,
    OptimizeOptions,
    OptimizeResult,
    PolicyJob,
)
from rlhf_train.policy.prompts import load_policy_prompts
from rlhf_train.reward.source import resolve_reward
from rlhf_train.runs.lifecycle import new_model_name, publish_trained, recorded_run, resume_point
from rlhf_train.runs.record import RunLog, run_checkpoints
from rlhf_train.workspace import Workspace


def _algorithm(name: str) -> Algorithm:
    if name == "ppo":
        from rlhf_train.policy.ppo_runner import run_ppo

        return run_ppo
    from rlhf_train.policy import trl_runner as optimize_trl

    return {
        "dpo": optimize_trl.run_dpo,
        "rloo": optimize_trl.run_rloo,
        "grpo": optimize_trl.run_grpo,
    }[name]


def _check(options: OptimizeOptions, config: Config) -> None:
    if options.algorithm not in ALGORITHMS:
        raise UserError(
            f"Unknown algorithm {options.algorithm!r}; use one of: {', '.join(ALGORITHMS)}."
        )
    if options.algorithm == "dpo" and not options.data:
        raise UserError("DPO trains on preferences: pass --data EXPORT_FOLDER (`rlhf export`).")
    if options.save_adapter and not options.lora:
        raise UserError("--save-adapter keeps a LoRA adapter; it needs --lora.")
    if options.report_to not in ("none", "tensorboard"):
        raise UserError(f"--report-to is {options.report_to!r}; use none or tensorboard.")
    if options.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError(
                "--report-to tensorboard needs the tensorboard package; "
                "`pip install tensorboard` or leave the flag out (JSON lines are always written)."
            ) from None
    if options.time_limit is not None and options.time_limit <= 0:
        raise UserError(f"--time-limit is {options.time_limit}; pass minutes above 0.")
    if options.max_steps is not None and options.max_steps < 1:
        raise UserError(f"--max-steps is {options.max_steps}; pass 1 or more.")
    if options.algorithm == "ppo":
        batch, minibatch = config.optimize.batch_size, config.ppo.minibatch_size
        if batch % minibatch:
            raise UserError(
                f"optimize.batch_size ({batch}) must be a multiple of ppo.minibatch_size "
                f"({minibatch}); change one of them."
            )
        if minibatch % config.ppo.gradient_accumulation_steps:
            raise UserError(
                f"ppo.minibatch_size ({minibatch}) must be a multiple of "
                f"ppo.gradient_accumulation_steps ({config.ppo.gradient_accumulation_steps})."
            )


def prepare_job(workspace: Workspace, options: OptimizeOptions) -> PolicyJob:
    """Resolve and check everything a user can get wrong; nothing is written yet."""
    config = workspace.config
    _check(options, config)
    if options.name is not None:
        check_new_model(workspace, options.name)
    device = resolve_device(config.runtime.device)
    export = read_export(workspace, options.data) if options.algorithm == "dpo" else None
    if export is not None:
        export.split("train")
    prompts = reward = None
    if options.algorithm != "dpo":
        prompts = load_policy_prompts(workspace, options.prompts, options.chat)
        reward = resolve_reward(workspace, options.reward)
    policy_id, policy_name, location = policy_to_train(workspace, options.policy)
    model, tokenizer = load_policy(location, device)
    peft_config = lora_config(model, config.lora, "CAUSAL_LM") if options.lora else None
    reference_location = None
    if options.algorithm == "ppo" and config.ppo.reference == "start":
        start_location = lineage_start(workspace, policy_id)
        reference_location = start_location if start_location != location else None
    return PolicyJob(
        options=options,
        config=config,
        device=device,
        policy_id=policy_id,
        policy_name=policy_name,
        policy_location=location,
        model=model,
        tokenizer=tokenizer,
        peft_config=peft_config,
        reference_location=reference_location,
        prompts=prompts,
        reward=reward,
        export=export,
    )


def _run_config(job: PolicyJob) -> dict[str, Any]:
    sections = SECTIONS[job.options.algorithm]
    return {
        "options": job.options.recorded(),
        "settings": {name: asdict(getattr(job.config, name)) for name in sections},
        "policy": job.policy_name,
        "reward": job.reward.description if job.reward else None,
    }


def _resumed(workspace: Workspace, algorithm: str, run_id: int | None):
    """The workspace with the recorded settings, the options and the run to resume."""
    run, checkpoint = resume_point(workspace, algorithm, run_id)
    recorded = run.config
    config = workspace.config
    for name, values in recorded["settings"].items():
        section = type(getattr(config, name))(**values)
        config = replace(config, **{name: section})
    options = OptimizeOptions(**recorded["options"])
    return replace(workspace, config=config), options, run.id, checkpoint


def optimize_policy(
    workspace: Workspace,
    options: OptimizeOptions,
    resume: bool = False,
    run_id: int | None = None,
) -> OptimizeResult | None:
    """Optimize a policy with options.algorithm; None on processes other than the main one.

    With `resume`, continue run `run_id` (default: the newest unfinished run of that
    algorithm) from its last checkpoint, with the options and settings it recorded.
    """
    resumed_run, checkpoint = None, None
    if resume:
        progress = options.progress
        workspace, options, resumed_run, checkpoint = _resumed(workspace, options.algorithm, run_id)
        options = replace(options, progress=progress)
    configure_threads(workspace.config.runtime.threads)
    job = prepare_job(workspace, options)
    config = _run_config(job)
    export_id = (job.export.export_id if job.export else None) or _reward_export_id(workspace, job)

    def train(run: int) -> OptimizeResult | None:
        job.workspace, job.run_id = workspace, run
        job.checkpoints, job.resume_from = run_checkpoints(workspace, run), checkpoint
        job.log = RunLog(workspace, run)
        return _optimize(workspace, job, export_id)

    return recorded_run(
        workspace, options.algorithm, config, train, export_id=export_id, resumed_run=resumed_run
    )


def _reward_export_id(workspace: Workspace, job: PolicyJob) -> int | None:
    """The export the reward model was trained on, which this policy then inherits."""
    if job.reward is None or job.reward.model_id is None:
        return None
    from db.models import Model

    with workspace.sessions() as session:
        model = session.get(Model, job.reward.model_id)
        return (model.config or {}).get("export_id")


def _optimize(workspace: Workspace, job: PolicyJob, export_id: int | None) -> OptimizeResult | None:
    options = job.options
    name = new_model_name(workspace, options.name, options.algorithm, job.run_id)
    job.deadline = Deadline(options.time_limit)
    trained, metrics = _algorithm(options.algorithm)(job)
    if not is_main_process():
        return None
    metrics = dict(metrics, algorithm=options.algorithm)
    if job.deadline.reached:
        metrics["stopped_by_time_limit"] = options.time_limit
    if hasattr(trained, "merge_and_unload") and not options.save_adapter:
        # A merged model loads with transformers alone and can start the next run.
        trained = trained.merge_and_unload()

    def write(folder: Path) -> None:
        trained.save_pretrained(folder)
        job.tokenizer.save_pretrained(folder)

    new = NewModel(
        name=name,
        kind="policy",
        metrics=metrics,
        config=_run_config(job)
        | {
            "training_run": job.run_id,
            "reward_model_id": job.reward.model_id if job.reward else None,
            "export_id": export_id,
            "lora": options.lora,
            "adapter": options.save_adapter,
            **({"base_model": job.policy_location} if options.save_adapter else {}),
        },
        parent_id=job.policy_id,
        training_run_id=job.run_id,
        promote=options.promote,
    )
    return publish_trained(workspace, job.run_id, new, write)
