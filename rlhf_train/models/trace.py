"""`rlhf models trace NAME`: a model back to the judgments that made it.

A policy leads to the run that trained it, that run to the retraining job it was a step
of, to the export it learned from (or its reward model's export), and the export to its
rounds and their judgments; then the same for its parent policy, up to the root.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import Export, Model, Round, TrainingRun
from db.registry import current_policy, find_model, lineage
from db.retraining import judgments_in_round


def _export_line(session: Session, export_id: int | None) -> str | None:
    export = session.get(Export, export_id) if export_id else None
    if export is None:
        return None
    rounds = export.filters.get("rounds") or []
    judged = {number: 0 for number in rounds}
    for round_ in session.query(Round).filter(Round.number.in_(rounds)):
        judged[round_.number] = judgments_in_round(session, round_.id)
    per_round = ", ".join(f"round {n}: {judged[n]} judgments" for n in rounds)
    counts = export.counts or {}
    return (
        f"export {export.id} ({export.output_path}): {counts.get('rows_train', '?')} train and "
        f"{counts.get('rows_test', 0)} test rows from {per_round or 'no rounds'}"
    )


def _model_lines(session: Session, model: Model, current_id: int | None) -> list[str]:
    marker = " (current policy)" if model.id == current_id else ""
    lines = [f"{model.kind} {model.name!r}{marker} at {model.path}"]
    run = session.get(TrainingRun, model.training_run_id) if model.training_run_id else None
    if run is None:
        lines.append("  not trained here (registered, built in or imported)")
        return lines
    job = f", a step of retraining run {run.parent_id}" if run.parent_id else ""
    lines.append(f"  trained by {run.kind} run {run.id} ({run.status}){job}")
    if run.round_id:
        round_ = session.get(Round, run.round_id)
        lines.append(f"  learned from round {round_.number}")
    export = _export_line(session, run.export_id)
    if export:
        lines.append(f"  on {export}")
    reward_id = (model.config or {}).get("reward_model_id")
    reward = session.get(Model, reward_id) if reward_id else None
    if reward is not None:
        lines.append(
            f"  against reward model {reward.name!r} (trained by run {reward.training_run_id})"
        )
    return lines


def trace_model(session: Session, name: str) -> list[str]:
    model = find_model(session, name)
    if model is None:
        raise UserError(f"There is no registered model {name!r}; `rlhf models list` shows them.")
    current = current_policy(session)
    current_id = current.id if current is not None else None
    lines: list[str] = []
    for depth, ancestor in enumerate(lineage(session, model)):
        if depth:
            lines.append("parent:")
        lines += _model_lines(session, ancestor, current_id)
    return lines
