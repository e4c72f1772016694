"""`rlhf simulate`: the whole loop, unattended, with simulated annotators.

Rounds of: simulated annotators judge the open round (through the app's database
functions), then `rounds next` retrains from it (the same job a lead starts), whose
evaluation measures the new policy with the task's judge. So a lead can rehearse a
project, and we can measure the loop: per round, the judge's figure of the current
policy, its reward, its KL to the starting policy, and its diversity.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from db.engine import transaction
from db.models import Round, User
from db.users import create_user
from rlhf_train.atomic import write_text_atomically
from rlhf_train.errors import UserError
from rlhf_train.judgments.simulated import TASKS, SimulatedAnnotator, annotate
from rlhf_train.loop.quickstart import prepare_first_round
from rlhf_train.loop.round_next import NextRoundOptions, queue_next_round, run_here
from rlhf_train.workspace import Workspace

# The figure each task is judged by, from a policy evaluation's metrics.
TASK_FIGURES = {
    "positive": ("positive_share", "share of responses the lexicon calls positive"),
    "negative": ("negative_share", "share of responses the lexicon calls negative"),
    "shorter": ("words_mean", "mean words per response"),
}


@dataclass(frozen=True)
class SimulationOptions:
    task: str = "positive"
    annotators: int = 3
    rounds: int = 2
    labels_per_round: int = 256
    noise: float = 0.1
    position_bias: float = 0.0
    seed: int = 0
    # 3 to 6: ranking rounds of that many responses per prompt, ranked by Plackett-Luce
    # at the same noise; 0: pairwise rounds.
    rank: int = 0
    round_options: NextRoundOptions = field(default_factory=NextRoundOptions)
    progress: bool = True

    def check(self) -> None:
        if self.task not in TASKS:
            raise UserError(f"Unknown task {self.task!r}; use one of: {', '.join(TASKS)}.")
        for name, value in (
            ("--annotators", self.annotators),
            ("--rounds", self.rounds),
            ("--labels-per-round", self.labels_per_round),
        ):
            if value < 1:
                raise UserError(f"{name} is {value}; pass 1 or more.")
        if self.noise < 0:
            raise UserError(f"--noise is {self.noise}; pass 0 (no noise) or more.")
        if not 0 <= self.position_bias <= 1:
            raise UserError(f"--position-bias is {self.position_bias}; pass 0 to 1.")
        if self.rank not in (0, 2) and not 3 <= self.rank <= 6:
            raise UserError(f"--rank is {self.rank}; pass 3 to 6 (or 0 for pairs).")


@dataclass
class RoundRecord:
    round: int  # 0: the starting policy, before any retraining
    policy: str
    labels: int
    figure: float | None
    reward: float | None
    kl: float | None
    distinct_2: float | None
    response_length: float | None
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def simulation_settings(workspace: Workspace, options: SimulationOptions) -> Workspace:
    """The workspace with rounds big enough for the labels, and the task's judge on."""
    config = workspace.config
    if options.rank >= 3:
        # One ranking task per prompt, of K responses; every round of the run is ranked.
        config = replace(
            config,
            round=replace(config.round, rank=options.rank),
            generation=replace(config.generation, samples_per_prompt=options.rank),
        )
    pairs_per_prompt = 1 if options.rank >= 3 else config.generation.samples_per_prompt // 2
    # Some prompts give identical samples and no pair: a tenth more, and a few spare.
    pairs = math.ceil(options.labels_per_round / config.round.overlap)
    prompts = math.ceil(pairs / pairs_per_prompt * 1.1) + 2
    # reviews: a second sentiment judge the annotators never use (review_judge.py).
    judges = "sentiment,words,reviews"
    return replace(
        workspace,
        config=replace(
            config,
            generation=replace(config.generation, n_prompts=prompts),
            loop=replace(config.loop, next_prompts=prompts),
            evaluate=replace(config.evaluate, judges=judges),
        ),
    )


def _annotators(workspace: Workspace, options: SimulationOptions) -> list[SimulatedAnnotator]:
    oracle = TASKS[options.task]
    team = []
    with transaction(workspace.sessions) as session:
        for index in range(1, options.annotators + 1):
            name = f"sim-{index}"
            user = session.query(User).filter(User.name == name).one_or_none()
            if user is None:
                user = create_user(session, name, "annotator", secrets.token_urlsafe(16))
            elif user.role != "annotator":
                raise UserError(
                    f"The user {name!r} exists and is a {user.role}; simulated annotators "
                    "need that name: rename the user or use another workspace."
                )
            team.append(
                SimulatedAnnotator(
                    user.id,
                    name,
                    oracle,
                    options.noise,
                    options.position_bias,
                    random.Random(options.seed * 1000 + index),
                )
            )
    return team


def _open_round(workspace: Workspace) -> Round:
    with workspace.sessions() as session:
        round_ = session.query(Round).filter(Round.status == "open").order_by(Round.number).first()
        if round_ is None:
            raise UserError(
                "There is no open round to annotate; open one in the app's Rounds page or "
                "generate one with `rlhf generate`."
            )
        session.expunge(round_)
        return round_


def _record(round_number: int, policy: str, labels: int, task: str, metrics: dict, seconds: float):
    figure_key = TASK_FIGURES[task][0]
    mine = (metrics.get("figures") or {}).get("policy") or {}
    return RoundRecord(
        round=round_number,
        policy=policy,
        labels=labels,
        figure=mine.get(figure_key),
        reward=mine.get("score_mean"),
        kl=mine.get("kl"),
        distinct_2=mine.get("distinct_2"),
        response_length=mine.get("response_length"),
        seconds=round(seconds, 1),
        metrics=metrics,
    )


def _evaluate_start(workspace: Workspace, round_: Round, options: SimulationOptions) -> dict:
    from db.models import Model
    from rlhf_train.evaluation.report import PolicyEvaluationOptions, evaluate_policy_report

    with workspace.sessions() as session:
        policy = session.get(Model, round_.policy_id).name
    report = evaluate_policy_report(
        workspace,
        PolicyEvaluationOptions(policy=policy, progress=options.progress),
    )
    return {"policy": policy, "metrics": report.metrics}


def _print_row(record: RoundRecord, task: str) -> None:
    def number(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print(
        f"round {record.round}: {record.policy:<16} labels {record.labels:>4}  "
        f"{TASK_FIGURES[task][0]} {number(record.figure)}  reward {number(record.reward)}  "
        f"KL {number(record.kl)}  distinct-2 {number(record.distinct_2)}  "
        f"{record.seconds:.0f} s",
        flush=True,
    )


def simulate(workspace: Workspace, options: SimulationOptions) -> list[RoundRecord]:
    """Run `options.rounds` rounds of simulated annotation and retraining."""
    options.check()
    workspace = simulation_settings(workspace, options)
    started = time.perf_counter()
    prepare_first_round(workspace, progress=options.progress)
    team = _annotators(workspace, options)
    first = _open_round(workspace)
    base = _evaluate_start(workspace, first, options)
    records = [
        _record(0, base["policy"], 0, options.task, base["metrics"], time.perf_counter() - started)
    ]
    _print_row(records[-1], options.task)
    for _ in range(options.rounds):
        began = time.perf_counter()
        round_ = _open_round(workspace)
        labels = annotate(workspace, team, options.labels_per_round)
        if labels < options.labels_per_round:
            print(
                f"Round {round_.number} had pairs for {labels} of {options.labels_per_round} "
                "labels; retraining with those.",
                flush=True,
            )
        job_id = queue_next_round(
            workspace,
            replace(options.round_options, round_number=round_.number, progress=options.progress),
            requested_in="simulate",
        )
        outcome = run_here(workspace, job_id)
        metrics = _evaluation_metrics(workspace, outcome.steps)
        records.append(
            _record(
                round_.number,
                outcome.policy,
                labels,
                options.task,
                metrics,
                time.perf_counter() - began,
            )
        )
        _print_row(records[-1], options.task)
    _write_summary(workspace, options, records)
    return records


def _evaluation_metrics(workspace: Workspace, steps: dict) -> dict:
    from db.models import Evaluation

    evaluation_id = steps["evaluate"]["outputs"]["evaluation_id"]
    with workspace.sessions() as session:
        return dict(session.get(Evaluation, evaluation_id).metrics)


def _write_summary(workspace: Workspace, options: SimulationOptions, records: list) -> Path:
    folder = workspace.root / "reports" / "simulations"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"simulation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    summary = {
        "options": asdict(options),
        "rounds": [asdict(record) for record in records],
    }
    write_text_atomically(path, json.dumps(summary, indent=2, default=str))
    print(f"Summary: {path}", flush=True)
    return path
