"""`rlhf evaluate policy`: a policy measured on the held-out prompts between rounds,
maybe against another policy, written up as a report and recorded as an evaluation.

Every evaluation answers the same fixed prompts (the first `evaluate.n_prompts` of the
eval split, by id) with the same seed, so reports of successive rounds compare like with
like. The measuring itself is `policy_eval.evaluate_policy`'s: reward-model scores, KL to
a reference policy (by default the root of the policy's lineage, the model the project
started from), reference perplexity, length and diversity. On top of it come the task's
judges (judges.py), the reward model's win rate of one policy over the other on the
same prompts, and what the annotators said about the two in judged pairs (head_to_head).

The report folder (report.json, report.md, PNG plots) is written to a temporary folder
and renamed into place in the transaction that records the Evaluation row, so a failed
evaluation leaves neither a half-written folder nor a row pointing at nothing.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm

from db.engine import transaction
from db.evaluations import add_evaluation, head_to_head
from db.models import Model, Prompt
from db.registry import current_policy, lineage
from db.rounds import get_round
from rlhf_train.atomic import check_output_folder
from rlhf_train.errors import UserError
from rlhf_train.evaluation.intervals import policy_intervals
from rlhf_train.evaluation.measures import ScoreFunction, evaluate_policy
from rlhf_train.evaluation.plots import write_policy_plots
from rlhf_train.evaluation.text import FIGURE_KEYS, markdown
from rlhf_train.judges import JUDGES, judge_summary, parse_judges
from rlhf_train.judgments.ratings import fit_leaderboard, leaderboard_json
from rlhf_train.judgments.votes import cross_policy_votes
from rlhf_train.models.loading import configure_threads, load_policy, resolve_device
from rlhf_train.models.sampling import PromptInput
from rlhf_train.models.source import model_location, resolve_policy
from rlhf_train.reward.source import RewardSource, resolve_reward, score_function
from rlhf_train.workspace import Workspace

HISTOGRAM_BINS = 20
BATCH_SIZE = 16


@dataclass(frozen=True)
class PolicyEvaluationOptions:
    policy: str | None = None  # None: the current policy
    against: str | None = None  # the policy to compare with, if any
    reference: str | None = None  # None: the root of the policy's lineage
    reward: str | None = None  # None: the newest reward model (none registered: no scores)
    round_number: int | None = None  # the round whose report this is
    out: Path | None = None  # None: reports/policies/P[-vs-Q]-ID
    progress: bool = True


@dataclass(frozen=True)
class PolicyReport:
    evaluation_id: int
    folder: Path
    metrics: dict[str, Any]  # as recorded: report.json without its samples


@dataclass(frozen=True)
class _Policy:
    id: int
    name: str
    location: str


@dataclass(frozen=True)
class _Subjects:
    policy: _Policy
    against: _Policy | None
    reference: _Policy
    round_id: int | None


# ---- what is evaluated --------------------------------------------------------------------


def held_out_prompts(workspace: Workspace, n: int) -> tuple[list[PromptInput], str]:
    """The first `n` eval-split prompts by id, and "eval"; the train split's when the eval
    split is empty. Ordered by id so that the same prompts come back every time, and a
    prompt imported later never displaces one that earlier reports were measured on."""
    with workspace.sessions() as session:
        for split in ("eval", "train"):
            rows = session.execute(
                select(Prompt.text, Prompt.chat, Prompt.messages)
                .where(Prompt.split == split)
                .order_by(Prompt.id)
                .limit(n)
            ).all()
            if rows:
                return [PromptInput(text, chat, messages) for text, chat, messages in rows], split
    raise UserError(
        "The workspace has no prompts to evaluate on; import some with `rlhf prompts import` "
        "or `rlhf prompts builtin imdb`."
    )


def _reward(workspace: Workspace, spec: str | None) -> RewardSource | None:
    """The reward to score with; None when none was asked for and none is registered."""
    if spec is None:
        with workspace.sessions() as session:
            if session.scalar(select(Model.id).where(Model.kind == "reward").limit(1)) is None:
                return None
    return resolve_reward(workspace, spec)


def _registered(model: Model) -> _Policy:
    return _Policy(model.id, model.name, model_location(model))


def _subjects(
    session: Session, workspace: Workspace, options: PolicyEvaluationOptions
) -> _Subjects:
    if options.policy is None:
        model = current_policy(session)
        if model is None:
            raise UserError(
                "There is no current policy yet; name the policy to evaluate, or promote one "
                "with `rlhf models promote`."
            )
    else:
        model = resolve_policy(session, options.policy, workspace.models_dir)
    against = None
    if options.against is not None:
        against = _registered(resolve_policy(session, options.against, workspace.models_dir))
    if options.reference is None:
        reference = lineage(session, model)[-1]
    else:
        reference = resolve_policy(session, options.reference, workspace.models_dir)
    round_id = None
    if options.round_number is not None:
        round_id = get_round(session, options.round_number).id
    return _Subjects(_registered(model), against, _registered(reference), round_id)


def _report_folder(workspace: Workspace, subjects: _Subjects, evaluation_id: int) -> Path:
    name = subjects.policy.name
    if subjects.against is not None:
        name += f"-vs-{subjects.against.name}"
    # Names of hub models hold a slash; a folder name must not.
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    folder = workspace.root / "reports" / "policies" / f"{name}-{evaluation_id}"
    if folder.exists():  # left over from an earlier database of this workspace
        folder = folder.with_name(f"{folder.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    return folder


def _check_out(workspace: Workspace, out: Path | None) -> Path | None:
    """`out` made absolute, if it is a new or empty folder outside the workspace's own."""
    if out is None:
        return None
    return check_output_folder(out, workspace_root=workspace.root, overwrite=True)


# ---- measuring ------------------------------------------------------------------------------


def _same_vocabulary(tokenizer, reference_tokenizer) -> bool:
    return tokenizer.get_vocab() == reference_tokenizer.get_vocab()


def _measure(
    policy: _Policy,
    reference: tuple[_Policy, Any, Any],
    prompts: list[PromptInput],
    score: ScoreFunction | None,
    judges: list[str],
    workspace: Workspace,
    device: str,
    notes: list[str],
) -> tuple[dict[str, Any], list[str], dict[str, list[float]]]:
    """(figures, response texts, judge name -> scores) of one policy's responses."""
    settings = workspace.config.evaluate
    reference_policy, reference_model, reference_tokenizer = reference
    if policy.location == reference_policy.location:
        # The policy is its own reference: one copy of the weights serves both.
        model, tokenizer = reference_model, reference_tokenizer
    else:
        model, tokenizer = load_policy(policy.location, device)
    comparable = _same_vocabulary(tokenizer, reference_tokenizer)
    if not comparable:
        notes.append(
            f"{policy.name} has another tokenizer than the reference, so its KL and reference "
            "perplexity are not measured."
        )
    measured = evaluate_policy(
        model,
        tokenizer,
        prompts,
        score or (lambda prompts, responses: [0.0] * len(responses)),
        reference_model if comparable else None,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        batch_size=BATCH_SIZE,
        # Every row, not a few: the report shows each response beside the other policy's.
        sample_rows=len(prompts),
    )
    texts = [row["response"] for row in measured["samples"]]
    figures = {key: measured[key] for key in ("n", *FIGURE_KEYS, "scores", "kl_terms")}
    if score is None:
        for key in ("score_mean", "score_std", "score_sem", "scores"):
            figures[key] = None
    prompt_texts = [prompt.text for prompt in prompts]
    judged = {name: JUDGES[name](prompt_texts, texts) for name in judges}
    for name, values in judged.items():
        figures |= judge_summary(name, values)
    figures["intervals"] = policy_intervals(figures, texts, judged, measured["ended"])
    return figures, texts, judged


def reward_win_rate(policy_scores: list[float], against_scores: list[float]) -> dict[str, Any]:
    """Prompt by prompt, how often the policy's response scores above the other's; a tie
    counts half, so a policy against itself is at exactly 0.5."""
    wins = sum(p > q for p, q in zip(policy_scores, against_scores, strict=True))
    losses = sum(p < q for p, q in zip(policy_scores, against_scores, strict=True))
    n = len(policy_scores)
    ties = n - wins - losses
    return {
        "win_rate": (wins + ties / 2) / n if n else None,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "n": n,
    }


def _histogram(figures: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """Counts of each policy's scores on one set of bins, so the two are comparable."""
    present = {side: f["scores"] for side, f in figures.items() if f and f["scores"] is not None}
    if not present:
        return None
    every = np.concatenate([np.asarray(scores, dtype=np.float64) for scores in present.values()])
    edges = np.histogram_bin_edges(every, bins=HISTOGRAM_BINS)
    histogram: dict[str, Any] = {"edges": [float(edge) for edge in edges]}
    for side in figures:
        scores = present.get(side)
        histogram[side] = (
            None if scores is None else [int(c) for c in np.histogram(scores, bins=edges)[0]]
        )
    return histogram


def _finite(value: Any) -> Any:
    """JSON without NaN or infinity (a perplexity can overflow): those become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _samples(prompts: list[PromptInput], measured: _Measured) -> list[dict[str, Any]]:
    """One row per prompt: both responses, their rewards and their judges' scores."""
    rows = []
    for i, prompt in enumerate(prompts):
        row: dict[str, Any] = {"prompt": prompt.text}
        for side in ("policy", "against"):
            figures = measured.figures[side]
            scores = figures["scores"] if figures else None
            row[f"{side}_response"] = measured.texts[side][i] if side in measured.texts else None
            row[f"{side}_score"] = scores[i] if scores is not None else None
            for name, values in measured.judged.get(side, {}).items():
                row[f"{side}_{name}"] = values[i]
        rows.append(row)
    return rows


# ---- the report -----------------------------------------------------------------------------


def evaluate_policy_report(workspace: Workspace, options: PolicyEvaluationOptions) -> PolicyReport:
    """Measure options.policy (and options.against) on the held-out prompts, write the
    report folder and record an Evaluation; see the module docstring."""
    settings = workspace.config.evaluate
    try:
        judges = parse_judges(settings.judges)
    except ValueError as exc:
        raise UserError(f"evaluate.judges: {exc}; fix it in rlhf.toml.") from exc
    # Everything a user can get wrong is checked before the slow part.
    options = replace(options, out=_check_out(workspace, options.out))
    prompts, split = held_out_prompts(workspace, settings.n_prompts)
    reward = _reward(workspace, options.reward)
    with transaction(workspace.sessions) as session:
        subjects = _subjects(session, workspace, options)
    notes = _notes(split, reward)
    sides = {"policy": subjects.policy}
    if subjects.against is not None:
        sides["against"] = subjects.against
    with tqdm(total=len(sides) + 2, desc="Evaluating", disable=not options.progress) as bar:
        measured = _measure_all(
            workspace, subjects.reference, sides, prompts, reward, judges, notes, bar
        )
        metrics = _finite(
            _metrics(
                workspace, subjects, reward, split, judges, measured, notes, options.round_number
            )
        )
        samples = _finite(_samples(prompts, measured))
        bar.set_postfix_str("writing the report")
        evaluation_id, folder = _write_and_record(workspace, options, subjects, metrics, samples)
        bar.update()
    return PolicyReport(evaluation_id, folder, metrics)


def _notes(split: str, reward: RewardSource | None) -> list[str]:
    notes = []
    if split != "eval":
        notes.append(
            "The workspace has no eval-split prompts, so the policies were measured on train "
            "prompts they may have been optimized on."
        )
    if reward is None:
        notes.append(
            "No reward model is registered, so there are no reward scores or reward win rate; "
            "train one with `rlhf train reward` or pass --reward."
        )
    return notes


@dataclass
class _Measured:
    """Per side ("policy", "against"): figures, response texts, judge name -> scores."""

    figures: dict[str, dict[str, Any] | None]
    texts: dict[str, list[str]]
    judged: dict[str, dict[str, list[float]]]


def _measure_all(
    workspace: Workspace,
    reference_policy: _Policy,
    sides: dict[str, _Policy],
    prompts: list[PromptInput],
    reward: RewardSource | None,
    judges: list[str],
    notes: list[str],
    bar: tqdm,
) -> _Measured:
    configure_threads(workspace.config.runtime.threads)
    device = resolve_device(workspace.config.runtime.device)
    score = score_function(reward, device) if reward is not None else None
    # Loaded once for both policies; released when this function returns.
    reference = (reference_policy, *load_policy(reference_policy.location, device))
    bar.update()
    measured = _Measured({"policy": None, "against": None}, {}, {})
    for side, policy in sides.items():
        bar.set_postfix_str(policy.name)
        measured.figures[side], measured.texts[side], measured.judged[side] = _measure(
            policy, reference, prompts, score, judges, workspace, device, notes
        )
        bar.update()
    return measured


def _metrics(
    workspace: Workspace,
    subjects: _Subjects,
    reward: RewardSource | None,
    split: str,
    judges: list[str],
    measured: _Measured,
    notes: list[str],
    round_number: int | None,
) -> dict[str, Any]:
    """The figures of report.json (less the samples), as recorded in the Evaluation."""
    settings = workspace.config.evaluate
    figures = measured.figures
    reward_comparison = None
    if figures["against"] is not None and reward is not None:
        reward_comparison = reward_win_rate(
            figures["policy"]["scores"], figures["against"]["scores"]
        )
    annotators = None
    if subjects.against is not None:
        with workspace.sessions() as session:
            annotators = head_to_head(session, subjects.policy.id, subjects.against.id)
    return {
        "policy": subjects.policy.name,
        "policy_id": subjects.policy.id,
        "against": subjects.against.name if subjects.against else None,
        "against_id": subjects.against.id if subjects.against else None,
        "reference": subjects.reference.name,
        "reference_id": subjects.reference.id,
        "reward": reward.description if reward else None,
        "reward_model_id": reward.model_id if reward else None,
        "round": round_number,
        "prompt_split": split,
        "n_prompts": figures["policy"]["n"],
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "judges": judges,
        "figures": figures,
        "score_histogram": _histogram(figures),
        "reward_win_rate": reward_comparison["win_rate"] if reward_comparison else None,
        "reward_comparison": reward_comparison,
        "annotator_win_rate": annotators.win_rate if annotators else None,
        "annotator_judgments": annotators.judged if annotators else 0,
        "annotator_comparison": (
            {"wins": annotators.wins, "losses": annotators.losses, "ties": annotators.ties}
            if annotators
            else None
        ),
        "leaderboard": policy_leaderboard(workspace),
        "notes": notes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def policy_leaderboard(workspace: Workspace) -> dict[str, Any] | None:
    """The ratings of every policy from all cross-policy votes so far, plain and
    length-controlled (rlhf_train.judgments.ratings); None before any such vote."""
    with workspace.sessions() as session:
        votes = cross_policy_votes(session)
    if not len(votes):
        return None
    return {
        "plain": leaderboard_json(fit_leaderboard(votes)),
        "style_control": leaderboard_json(fit_leaderboard(votes, style_control=True)),
    }


def _write_and_record(
    workspace: Workspace,
    options: PolicyEvaluationOptions,
    subjects: _Subjects,
    metrics: dict[str, Any],
    samples: list[dict[str, Any]],
) -> tuple[int, Path]:
    """Write the report into a temporary folder beside its final place, then, in one
    transaction, add the Evaluation row and rename the folder into place: either both
    exist afterwards or neither does."""
    base = options.out.parent if options.out else workspace.root / "reports" / "policies"
    base.mkdir(parents=True, exist_ok=True)
    temporary = base / f".evaluation-{uuid.uuid4().hex}.tmp"
    temporary.mkdir()
    final: Path | None = None
    try:
        plots = write_policy_plots(metrics, temporary)
        with transaction(workspace.sessions) as session:
            evaluation = add_evaluation(
                session,
                policy_id=subjects.policy.id,
                against_id=subjects.against.id if subjects.against else None,
                reward_model_id=metrics["reward_model_id"],
                round_id=subjects.round_id,
                metrics=metrics,
                report_path="",
            )
            final = options.out or _report_folder(workspace, subjects, evaluation.id)
            evaluation.report_path = str(final)
            report = {"evaluation_id": evaluation.id, **metrics, "samples": samples}
            (temporary / "report.json").write_text(
                json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8"
            )
            (temporary / "report.md").write_text(
                markdown(report, [plot.name for plot in plots]), encoding="utf-8"
            )
            session.flush()
            if final.is_dir():
                final.rmdir()  # an empty --out folder: checked empty before the work began
            temporary.rename(final)
            evaluation_id = evaluation.id
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        # The commit failed after the rename: the row is gone, so the folder goes too.
        if final is not None and final.is_dir() and not temporary.exists():
            shutil.rmtree(final, ignore_errors=True)
        raise
    return evaluation_id, final


# ---- reading it -----------------------------------------------------------------------------
