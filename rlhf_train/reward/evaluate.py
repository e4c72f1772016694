"""Scoring an export's test pairs with a reward model and writing the diagnostics a lead
reads before trusting it: accuracy by agreement and strength, the length-bias alarm,
Bradley-Terry calibration and the reward distributions (JSON and PNG plots)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from db.registry import find_model
from rlhf_train.atomic import check_output_folder, files_under, write_error, write_folder
from rlhf_train.errors import UserError
from rlhf_train.export.reader import read_export
from rlhf_train.models.loading import configure_threads, resolve_device
from rlhf_train.models.source import check_model_spec, model_location
from rlhf_train.reward.diagnostics import reward_diagnostics
from rlhf_train.reward.plots import PLOT_FILES, write_reward_plots
from rlhf_train.reward.scorer import RewardScorer
from rlhf_train.workspace import Workspace

DIAGNOSTICS_FILE = "diagnostics.json"
REPORT_FILES = {DIAGNOSTICS_FILE, *PLOT_FILES}


@dataclass
class RewardReport:
    folder: Path
    diagnostics: dict[str, Any]
    plots: list[Path]


def _response_lengths(scorer: RewardScorer, responses: list) -> np.ndarray:
    texts = [r if isinstance(r, str) else "\n".join(m["content"] for m in r) for r in responses]
    encoded = scorer.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return np.array([len(ids) for ids in encoded], dtype=np.int64)


def diagnose(
    scorer: RewardScorer, test: Dataset, folder: Path, context: dict[str, Any] | None = None
) -> RewardReport:
    """Score `test` (an export split), write diagnostics.json and the plots into `folder`."""
    prompts, chosen, rejected = test["prompt"], test["chosen"], test["rejected"]
    chosen_rewards = scorer.score(prompts, chosen)
    rejected_rewards = scorer.score(prompts, rejected)
    agreement = np.asarray(
        test["agreement"] if "agreement" in test.column_names else [1.0] * len(test)
    )
    margin = np.asarray(test["margin"] if "margin" in test.column_names else [1.0] * len(test))
    diagnostics = reward_diagnostics(
        chosen_rewards,
        rejected_rewards,
        _response_lengths(scorer, chosen),
        _response_lengths(scorer, rejected),
        agreement.astype(float),
        margin.astype(float),
    )
    diagnostics = (context or {}) | diagnostics
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DIAGNOSTICS_FILE).write_text(
        json.dumps(diagnostics, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    plots = write_reward_plots(diagnostics, folder)
    return RewardReport(folder, diagnostics, plots)


def summary_lines(diagnostics: dict[str, Any]) -> list[str]:
    """What the CLI prints after training or evaluating a reward model."""
    lines = [
        f"Pairwise accuracy on {diagnostics['n_pairs']} test pairs: {diagnostics['accuracy']:.3f}"
    ]
    for key, title in (("by_agreement", "agreement"), ("by_strength", "strength")):
        parts = [
            f"{b['bucket']} {b['accuracy']:.3f} (n={b['n']})"
            for b in diagnostics[key]
            if b["accuracy"] is not None
        ]
        lines.append(f"  by {title}: " + ("; ".join(parts) or "no pairs"))
    length = diagnostics["length"]
    lines.append(f"  longer-wins baseline: {length['longer_wins_accuracy']:.3f}")
    lines.append(("  LENGTH-BIAS ALARM: " if length["alarm"] else "  ") + length["message"])
    lines.append(f"  calibration error (ECE): {diagnostics['calibration']['ece']:.3f}")
    return lines


def _reward_location(workspace: Workspace, spec: str) -> tuple[str, str]:
    """(name for the report folder, location) of a registered reward model or a folder."""
    with workspace.sessions() as session:
        registered = find_model(session, spec)
    if registered is not None:
        if registered.kind != "reward":
            raise UserError(f"{spec!r} is a {registered.kind} model, not a reward model.")
        return registered.name, model_location(registered)
    if not Path(spec).expanduser().exists():
        raise UserError(
            f"No reward model {spec!r}: it is neither registered (`rlhf models list`) nor a folder."
        )
    location = check_model_spec(spec)
    return Path(location).name, location


def evaluate_reward(
    workspace: Workspace, spec: str, data: str, out: Path | None = None
) -> RewardReport:
    """`rlhf evaluate reward`: diagnostics of reward model `spec` on the test split of `data`."""
    name, location = _reward_location(workspace, spec)
    export = read_export(workspace, data)
    test = export.split("test")
    configure_threads(workspace.config.runtime.threads)
    scorer = RewardScorer.load(location, resolve_device(workspace.config.runtime.device))
    folder = check_output_folder(
        out or workspace.root / "reports" / name / f"eval-{export.path.name}",
        workspace_root=workspace.root,
        overwrite=True,
        foreign=not_a_reward_report,
        kind="reward model report",
    )
    context = {"model": name, "export": str(export.path)}
    diagnostics: dict[str, Any] = {}

    def write(staging: Path) -> None:
        diagnostics.update(diagnose(scorer, test, staging, context).diagnostics)

    try:
        write_folder(folder, write, replace=True)
    except OSError as error:
        raise write_error("--out", folder, error) from error
    return RewardReport(folder, diagnostics, [folder / name for name in PLOT_FILES])


def not_a_reward_report(folder: Path) -> str | None:
    """None when `folder` holds only what `diagnose` writes, else what else it holds."""
    others = [name for name in files_under(folder) if name not in REPORT_FILES]
    return f"it holds {others[0]}, which the report did not write" if others else None
