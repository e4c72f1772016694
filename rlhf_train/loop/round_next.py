"""`rlhf rounds next`: the judgments of a round become the policy that writes the next one.

A retraining job is a training run of kind "round". Its steps, in order:

1. close   the round (annotators stop; the export then reads a fixed set of judgments)
2. export  its judgments (every round up to it by default: loop.cumulative)
3. reward  train the reward model (from the previous one: loop.continue_reward)
4. optimize the round's policy against it (loop.optimizer: ppo, dpo, rloo, grpo)
5. evaluate the new policy against the round's policy on the held-out prompts
6. promote the new policy to current
7. generate the next round from the new policy, paired against the round's policy too

Each step records its inputs and outputs in the job's metrics["steps"] when it ends, and
the runs it starts (reward, ppo...) record the job as their parent and the round they
learn from; so a policy leads back to its job, its export and the judgments behind it.
A job that stops (an error, a cancel, a dead machine) keeps what finished: run again,
it skips the finished steps and resumes an unfinished training from its checkpoint.
Nothing is promoted before its training and evaluation finished.

With `[worker] launcher` set, the steps that train or sample (reward, optimize, evaluate,
generate) run as `LAUNCHER -m rlhf_train.cli ... runs step JOB STEP` (`run_step`): every
rank runs the step, the launch's main rank records it; close, export and promote, and the
job's own record, stay in this process (loop.launched has the process handling).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from db.engine import transaction
from db.evaluations import record_annotator_verdict
from db.models import Model, Round, TrainingRun, utcnow
from db.registry import find_model, promote
from db.retraining import enqueue_retraining, judgments_in_round
from db.round_admin import set_status
from db.runs import child_runs
from rlhf_train.db_retry import with_retries
from rlhf_train.errors import UserError
from rlhf_train.loop.launcher import Launcher, parse_launcher
from rlhf_train.runs.record import (
    RunLog,
    finish_run,
    outcome_recorded,
    part_of_job,
    run_checkpoints,
)
from rlhf_train.runs.trainer_args import last_checkpoint
from rlhf_train.workspace import Workspace

STEPS = ("close", "export", "reward", "optimize", "evaluate", "promote", "generate")
# The steps that train or sample, which the launcher runs in several processes.
LAUNCHED_STEPS = ("reward", "optimize", "evaluate", "generate")


@dataclass(frozen=True)
class NextRoundOptions:
    """What a lead may choose per retraining; the rest comes from the workspace settings."""

    optimizer: str | None = None  # None: loop.optimizer
    round_number: int | None = None  # the round to learn from; None: the newest
    cumulative: bool | None = None  # None: loop.cumulative
    pair_strategy: str | None = None  # the next round's; None: generation.pair_strategy
    lora: bool = False
    reward_max_steps: int | None = None  # None: the reward model's epochs decide
    optimize_max_steps: int | None = None  # None: optimize.steps
    optimize_time_limit: float | None = None  # minutes for the optimizer; None: no limit
    next_prompts: int | None = None  # None: loop.next_prompts, else generation.n_prompts
    notes: str = ""
    progress: bool = True

    def recorded(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoundOutcome:
    job_id: int
    round_number: int
    policy: str
    reward_model: str
    next_round: int
    steps: dict[str, Any]


def worker_name(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}"


def queue_next_round(
    workspace: Workspace,
    options: NextRoundOptions,
    created_by_id: int | None = None,
    requested_in: str = "cli",
) -> int:
    """Check and queue a retraining job; `rlhf worker` (or `run_job`) runs it.

    A [worker] launcher that cannot start is refused here, before anything is queued."""
    _check_options(options)
    parse_launcher(workspace.config.worker.launcher, workspace.root)
    config = options.recorded() | {"requested_in": requested_in}
    with transaction(workspace.sessions) as session:
        job = enqueue_retraining(
            session,
            config | {"optimizer": options.optimizer or workspace.config.loop.optimizer},
            created_by_id,
            workspace.config.loop.min_judgments,
            options.round_number,
        )
        return job.id


def _check_options(options: NextRoundOptions) -> None:
    from rlhf_train.policy.optimize import ALGORITHMS

    if options.optimizer is not None and options.optimizer not in ALGORITHMS:
        raise UserError(
            f"Unknown optimizer {options.optimizer!r}; use one of: {', '.join(ALGORITHMS)}."
        )
    if options.pair_strategy not in (None, "random", "uncertainty"):
        raise UserError(
            f"Unknown pair strategy {options.pair_strategy!r}; use random or uncertainty."
        )
    for name, value in (
        ("--reward-max-steps", options.reward_max_steps),
        ("--max-steps", options.optimize_max_steps),
        ("--next-prompts", options.next_prompts),
        ("--time-limit", options.optimize_time_limit),
    ):
        if value is not None and value <= 0:
            raise UserError(f"{name} is {value}; pass a number above 0.")


def options_of(job: TrainingRun) -> NextRoundOptions:
    """The options a queued job was recorded with (unknown keys ignored)."""
    known = set(NextRoundOptions.__dataclass_fields__)
    values = {key: value for key, value in (job.config or {}).items() if key in known}
    return NextRoundOptions(**values)


# ---- running a job ----------------------------------------------------------------------


class Job:
    """A claimed retraining job: its row, its log, and the record of its steps."""

    def __init__(self, workspace: Workspace, job_id: int, writes: bool = True) -> None:
        """`writes`: False in the ranks of a launched step other than its main one."""
        self.workspace = workspace
        self.id = job_id
        with workspace.sessions() as session:
            row = session.get(TrainingRun, job_id)
            if row is None or row.kind != "round":
                raise UserError(f"There is no retraining job {job_id}; see `rlhf runs list`.")
            self.options = options_of(row)
            self.optimizer = (row.config or {}).get("optimizer") or (
                self.options.optimizer or workspace.config.loop.optimizer
            )
            self.round_id = row.round_id
            self.steps: dict[str, Any] = dict((row.metrics or {}).get("steps", {}))
            round_ = session.get(Round, row.round_id) if row.round_id else None
            if round_ is None:
                raise UserError(f"Retraining job {job_id} names no round; queue a new one.")
            self.round_number = round_.number
            self.round_policy_id = round_.policy_id
        self.log = RunLog(workspace, job_id)
        if writes:
            with transaction(workspace.sessions) as session:
                session.get(TrainingRun, job_id).log_path = str(self.log.path)

    def reload_steps(self) -> None:
        """The steps as recorded, after a launched step recorded one in another process."""
        with self.workspace.sessions() as session:
            row = session.get(TrainingRun, self.id)
            self.steps = dict((row.metrics or {}).get("steps", {}))

    def step_done(self, name: str) -> bool:
        return bool(self.steps.get(name, {}).get("done"))

    def output(self, name: str, key: str) -> Any:
        return self.steps[name]["outputs"][key]

    def record(
        self,
        name: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        seconds: float,
        processes: int = 1,
    ):
        self.steps[name] = {
            "done": True,
            "inputs": inputs,
            "outputs": outputs,
            "seconds": round(seconds, 1),
            "processes": processes,
        }
        done = sum(self.step_done(step) for step in STEPS)

        def write() -> None:
            with transaction(self.workspace.sessions) as session:
                row = session.get(TrainingRun, self.id)
                metrics = dict(row.metrics or {})
                # The most any step used: what `rlhf runs show` reports for the job.
                used = max(processes, metrics.get("processes") or 1)
                row.metrics = metrics | {"steps": self.steps, "processes": used}
                row.progress = done / len(STEPS)
                row.heartbeat_at = utcnow()

        with_retries(write, f"recording step {name} of run {self.id}")
        self.log.write({"event": "step", "step": name, "status": "done", **self.steps[name]})

    def starting(self, name: str) -> None:
        def write() -> None:
            with transaction(self.workspace.sessions) as session:
                row = session.get(TrainingRun, self.id)
                row.metrics = dict(row.metrics or {}) | {"current_step": name}

        with_retries(write, f"recording step {name} of run {self.id}")
        self.log.write({"event": "step", "step": name, "status": "started"})
        print(f"[round {self.round_number}] {name}", flush=True)


def run_job(workspace: Workspace, job_id: int) -> RoundOutcome:
    """Run (or resume) a claimed retraining job to the end; the job's row is kept current.

    The caller has marked it running (`claim_next_run`); its outcome is recorded here.
    """
    job = Job(workspace, job_id)
    with outcome_recorded(workspace, job_id), part_of_job(job_id, job.round_id):
        launcher = parse_launcher(workspace.config.worker.launcher, workspace.root)
        for name in STEPS:
            if job.step_done(name):
                continue
            launched = launcher is not None and name in LAUNCHED_STEPS
            _check_same_processes(job, name, launcher.processes if launched else 1)
            job.starting(name)
            if launched:
                _launch_step(job, name, launcher)
                continue
            started = time.perf_counter()
            inputs, outputs = STEP_FUNCTIONS[name](job)
            job.record(name, inputs, outputs, time.perf_counter() - started)
        outcome = RoundOutcome(
            job_id=job_id,
            round_number=job.round_number,
            policy=job.output("optimize", "policy"),
            reward_model=job.output("reward", "reward_model"),
            next_round=job.output("generate", "round"),
            steps=job.steps,
        )
        finish_run(
            workspace,
            job_id,
            "succeeded",
            {
                "steps": job.steps,
                "current_step": None,
                "policy": outcome.policy,
                "reward_model": outcome.reward_model,
                "next_round": outcome.next_round,
            },
            job.output("optimize", "policy_id"),
        )
    return outcome


def run_step(workspace: Workspace, job_id: int, name: str) -> None:
    """One step of job `job_id` in a rank of a launch (`rlhf runs step`): every rank does
    its share, the main rank records the step (and a user error, for the job's message).

    Evaluation runs in the main rank alone, the others waiting for it: it samples a few
    held-out prompts, and its report and record are written once.
    """
    from rlhf_train.distributed import from_main_process, is_main_process, process_count

    if name not in LAUNCHED_STEPS:
        raise UserError(f"Step {name!r} is not launched; use one of {', '.join(LAUNCHED_STEPS)}.")
    main = is_main_process()
    job = Job(workspace, job_id, writes=main)
    started = time.perf_counter()
    with part_of_job(job.id, job.round_id):
        try:
            if name == "evaluate":
                inputs, outputs = from_main_process(lambda: _evaluate(job))
            else:
                inputs, outputs = STEP_FUNCTIONS[name](job)
        except UserError as exc:
            if main:
                _set_launched_error(job, str(exc))
            raise
    if main:
        job.record(name, inputs, outputs, time.perf_counter() - started, process_count())


def _set_launched_error(job: Job, error: str | None) -> None:
    def write() -> None:
        with transaction(job.workspace.sessions) as session:
            row = session.get(TrainingRun, job.id)
            row.metrics = dict(row.metrics or {}) | {"launched_error": error}

    with_retries(write, f"recording the error of a step of run {job.id}")


def _launched_error(job: Job) -> str | None:
    with job.workspace.sessions() as session:
        return (session.get(TrainingRun, job.id).metrics or {}).get("launched_error")


def _launch_step(job: Job, name: str, launcher: Launcher) -> None:
    """Step `name` under the launcher; this process waits, the launch's main rank records.

    A failure or a cancel stops every rank, and settles the step's runs that a killed
    rank could not settle itself."""
    from rlhf_train.loop.launched import run_launched

    _set_launched_error(job, None)
    command = launcher.command(job.workspace.cli_command("runs", "step", str(job.id), name))
    log_hint = f"the job's output ({job.workspace.logs_dir / f'run-{job.id}.log'} under a worker)"
    started = utcnow()
    try:
        run_launched(command, f"step {name} of run {job.id}", log_hint)
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt)
        recorded = None if cancelled else _launched_error(job)
        status = "cancelled" if cancelled else "failed"
        _settle_step_runs(job, status, recorded or str(exc), started)
        if recorded is not None:
            raise UserError(recorded) from exc
        raise
    job.reload_steps()
    if not job.step_done(name):
        raise UserError(
            f"Step {name} of run {job.id} ended without recording its outcome; see {log_hint} "
            "and retry the run."
        )


def _settle_step_runs(job: Job, status: str, error: str, since: datetime) -> None:
    """The job's step runs still marked running (their main rank was killed) get `status`.

    When the step failed, a run that this launch ended as cancelled was cancelled by the
    launcher stopping the surviving ranks (SIGTERM, which a rank records as a cancel), not
    by a lead: it failed too."""

    def write() -> None:
        with transaction(job.workspace.sessions) as session:
            for run in child_runs(session, job.id):
                stopped_by_launcher = (
                    status == "failed"
                    and run.status == "cancelled"
                    and run.finished_at is not None
                    and run.finished_at >= since
                )
                if run.status == "running" or stopped_by_launcher:
                    run.status = status
                    run.finished_at = utcnow()
                    run.metrics = dict(run.metrics or {}) | {"error": error}

    with_retries(write, f"recording the outcome of the step runs of run {job.id}")


def _check_same_processes(job: Job, name: str, processes: int | None) -> None:
    """A training resumed from its checkpoint runs with the processes it started with."""
    kind = {"reward": "reward", "optimize": job.optimizer}.get(name)
    resumable = _resumable_child(job, kind) if kind is not None else None
    if resumable is None:
        return
    with job.workspace.sessions() as session:
        recorded = (session.get(TrainingRun, resumable).metrics or {}).get("processes")
    if recorded is None or recorded == processes:
        return
    if processes is None:
        print(
            f"warning: run {resumable} checkpointed with {recorded} processes and the "
            "launcher does not say how many it starts; it resumes only with as many.",
            flush=True,
        )
        return
    raise UserError(
        f"Run {resumable} (step {name} of run {job.id}) checkpointed with {recorded} "
        f"processes, and {processes} would resume it; set [worker] launcher back to "
        f"{recorded} processes to resume it, or cancel this job and queue a new one."
    )


def run_here(workspace: Workspace, job_id: int, holder: str | None = None) -> RoundOutcome:
    """Hold queued job `job_id` and run it in this process, beating its heartbeat as a
    worker would; a lead's cancel interrupts it (KeyboardInterrupt) and is recorded."""
    import _thread

    from db.runs import claim_run
    from rlhf_train.runs.heartbeat import Heartbeat

    holder = holder or worker_name("cli")
    with transaction(workspace.sessions) as session:
        if not claim_run(session, job_id, holder):
            raise UserError(f"Run {job_id} was taken by a worker meanwhile; follow it there.")
    interval = workspace.config.worker.heartbeat_seconds
    with Heartbeat(workspace, job_id, holder, interval, _thread.interrupt_main):
        return run_job(workspace, job_id)


# ---- the steps ---------------------------------------------------------------------------

StepResult = tuple[dict[str, Any], dict[str, Any]]


def _close(job: Job) -> StepResult:
    with transaction(job.workspace.sessions) as session:
        round_ = session.get(Round, job.round_id)
        was = round_.status
        if was == "open":
            set_status(session, round_.number, "closed")
        judged = judgments_in_round(session, round_.id)
        outputs: dict[str, Any] = {"judgments": judged}
        if round_.previous_policy_id is not None:
            verdict = record_annotator_verdict(session, round_.policy_id, round_.previous_policy_id)
            outputs |= {
                "annotator_win_rate": verdict.win_rate,
                "annotator_judgments": verdict.judged,
            }
    return {"round": job.round_number, "status_before": was}, outputs


def _export(job: Job) -> StepResult:
    from rlhf_train.export.preferences import ExportOptions, export_preferences

    cumulative = job.options.cumulative
    if cumulative is None:
        cumulative = job.workspace.config.loop.cumulative
    with job.workspace.sessions() as session:
        numbers = [
            number
            for (number,) in session.query(Round.number).order_by(Round.number)
            if number <= job.round_number
        ]
    rounds = numbers if cumulative else [job.round_number]
    out = job.workspace.root / "exports" / f"round-{job.round_number}-run-{job.id}"
    # A previous attempt may have written the folder and died before recording it.
    result = export_preferences(
        job.workspace, ExportOptions(out=out, rounds=rounds, overwrite=True)
    )
    if not result.counts.get("rows_train"):
        raise UserError(
            f"The judgments of rounds {rounds} give no training pairs ({result.counts}); "
            "collect more judgments (ties and skips teach nothing) and retry."
        )
    inputs = {"rounds": rounds, "cumulative": cumulative}
    outputs = {"export_id": result.export_id, "path": str(out), "counts": result.counts}
    return inputs, outputs


def _finished_child(job: Job, kind: str) -> TrainingRun | None:
    with job.workspace.sessions() as session:
        runs = [run for run in child_runs(session, job.id) if run.kind == kind]
        for run in runs:
            session.expunge(run)
    done = [run for run in runs if run.status == "succeeded" and run.output_model_id]
    return done[-1] if done else None


def _resumable_child(job: Job, kind: str) -> int | None:
    """The newest unfinished step run of `kind` that has a checkpoint to resume from."""
    with job.workspace.sessions() as session:
        runs = [run for run in child_runs(session, job.id) if run.kind == kind]
        unfinished = [run.id for run in runs if run.status != "succeeded"]
    for run_id in reversed(unfinished):
        if last_checkpoint(run_checkpoints(job.workspace, run_id)) is not None:
            return run_id
    return None


def _model_name(job: Job, model_id: int) -> str:
    with job.workspace.sessions() as session:
        return session.get(Model, model_id).name


def _free_name(job: Job, base: str) -> str:
    with job.workspace.sessions() as session:
        return base if find_model(session, base) is None else f"{base}-run{job.id}"


def _train_step(
    job: Job, kind: str, train: Callable[[bool, int | None], Any]
) -> tuple[int | None, str | None, int | None]:
    """(model id, name, run id) of the step's training: already finished, resumed from a
    checkpoint, or started now; Nones in the ranks of a launch other than its main one."""
    finished = _finished_child(job, kind)
    if finished is not None:
        return finished.output_model_id, _model_name(job, finished.output_model_id), finished.id
    resumable = _resumable_child(job, kind)
    result = train(resumable is not None, resumable)
    if result is None:  # a rank of a launch other than its main one
        return None, None, None
    return result.model_id, result.name, result.run_id


def _previous_reward_model(job: Job) -> str | None:
    with job.workspace.sessions() as session:
        newest = (
            session.query(Model).filter(Model.kind == "reward").order_by(Model.id.desc()).first()
        )
        return newest.name if newest is not None else None


def _reward(job: Job) -> StepResult:
    from rlhf_train.reward.train import RewardOptions, train_reward

    settings = job.workspace.config.loop
    backbone = _previous_reward_model(job) if settings.continue_reward else None
    options = RewardOptions(
        data=job.output("export", "path"),
        backbone=backbone,
        name=_free_name(job, f"reward-r{job.round_number}"),
        lora=False,
        max_steps=job.options.reward_max_steps,
        progress=job.options.progress,
    )
    model_id, name, run_id = _train_step(
        job, "reward", lambda resume, run: train_reward(job.workspace, options, resume, run)
    )
    inputs = {"export_id": job.output("export", "export_id"), "backbone": backbone}
    outputs = {"reward_model": name, "reward_model_id": model_id, "run_id": run_id}
    return inputs, outputs


def _round_policy(job: Job) -> str:
    if job.round_policy_id is None:
        raise UserError(
            f"Round {job.round_number} records no policy (an imported round?); generate a "
            "round from a policy first."
        )
    return _model_name(job, job.round_policy_id)


def _optimize(job: Job) -> StepResult:
    from rlhf_train.policy.optimize import OptimizeOptions, optimize_policy

    start = _round_policy(job)
    options = OptimizeOptions(
        algorithm=job.optimizer,
        policy=start,
        reward=job.output("reward", "reward_model") if job.optimizer != "dpo" else None,
        data=job.output("export", "path") if job.optimizer == "dpo" else None,
        name=_free_name(job, f"policy-r{job.round_number}"),
        lora=job.options.lora,
        max_steps=job.options.optimize_max_steps,
        time_limit=job.options.optimize_time_limit,
        progress=job.options.progress,
    )
    model_id, name, run_id = _train_step(
        job,
        job.optimizer,
        lambda resume, run: optimize_policy(job.workspace, options, resume, run),
    )
    inputs = {
        "algorithm": job.optimizer,
        "start_policy": start,
        "reward_model": options.reward,
        "export_id": job.output("export", "export_id"),
    }
    return inputs, {"policy": name, "policy_id": model_id, "run_id": run_id}


def _evaluate(job: Job) -> StepResult:
    from rlhf_train.evaluation.report import PolicyEvaluationOptions, evaluate_policy_report

    options = PolicyEvaluationOptions(
        policy=job.output("optimize", "policy"),
        against=_round_policy(job),
        reward=job.output("reward", "reward_model"),
        round_number=job.round_number,
        progress=job.options.progress,
    )
    report = evaluate_policy_report(job.workspace, options)
    inputs = {"policy": options.policy, "against": options.against, "reward": options.reward}
    outputs = {"evaluation_id": report.evaluation_id, "report": str(report.folder)}
    return inputs, outputs


def _promote(job: Job) -> StepResult:
    policy_id = job.output("optimize", "policy_id")
    with transaction(job.workspace.sessions) as session:
        model = session.get(Model, policy_id)
        model.round_id = job.round_id
        promote(session, model)
    return {"policy": job.output("optimize", "policy")}, {"current_policy": model.name}


def _generate(job: Job) -> StepResult:
    from rlhf_train.rounds.generate import generate_round, request_from_config

    workspace = job.workspace
    loop = workspace.config.loop
    prompts = job.options.next_prompts or loop.next_prompts or workspace.config.generation.n_prompts
    number = job.round_number + 1
    request = request_from_config(
        workspace, number, job.output("optimize", "policy"), _round_policy(job)
    )
    request = replace(
        request,
        n_prompts=prompts,
        pair_strategy=job.options.pair_strategy or request.pair_strategy,
        reward=job.output("reward", "reward_model"),
    )
    from rlhf_train.distributed import is_main_process

    report = generate_round(workspace, request, progress=job.options.progress)
    if is_main_process():
        print(report.summary(), flush=True)
    inputs = {
        "policy": request.policy,
        "previous_policy": request.previous_policy,
        "pair_strategy": request.pair_strategy,
        "n_prompts": prompts,
    }
    outputs = {
        "round": number,
        "pairs_added": report.pairs,
        "pairs_by_strategy": report.pairs_by_strategy,
    }
    return inputs, outputs


STEP_FUNCTIONS: dict[str, Callable[[Job], StepResult]] = {
    "close": _close,
    "export": _export,
    "reward": _reward,
    "optimize": _optimize,
    "evaluate": _evaluate,
    "promote": _promote,
    "generate": _generate,
}


def describe_outcome(outcome: RoundOutcome) -> str:
    evaluation = outcome.steps.get("evaluate", {}).get("outputs", {})
    return (
        f"Round {outcome.round_number} retrained (run {outcome.job_id}): reward model "
        f"{outcome.reward_model!r}, policy {outcome.policy!r} is now current, and round "
        f"{outcome.next_round} is open for annotation. Report: {evaluation.get('report', '-')}"
    )
