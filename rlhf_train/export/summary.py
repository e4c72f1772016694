"""What `rlhf export` prints: where the data went, the filter counts, the agreement."""

from __future__ import annotations

from rlhf_train.export.card import COUNT_LABELS
from rlhf_train.export.preferences import ExportResult


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def describe_export(result: ExportResult) -> str:
    counts = result.counts
    lines = [
        f"Exported {counts['rows_train']} train and {counts['rows_test']} test rows to "
        f"{result.out} (export #{result.export_id}, content hash {result.content_hash[:12]}).",
        "",
    ]
    width = max(len(label) for label in COUNT_LABELS.values())
    lines += [f"  {COUNT_LABELS.get(k, k):<{width}}  {v}" for k, v in counts.items()]
    agreement = result.agreement
    lines += [
        "",
        f"Agreement: pairwise {_fmt(agreement['pairwise_agreement'])}, Krippendorff's alpha "
        f"{_fmt(agreement['krippendorff_alpha'])}"
        + (
            f", rankings' mean Kendall tau-b {_fmt(agreement['ranking_kendall_tau'])}"
            if agreement.get("ranking_kendall_tau") is not None
            else ""
        ),
        f"  {'annotator':<20} {'votes':>7} {'w/ majority':>12} {'gold acc.':>10}",
    ]
    for row in agreement["annotators"]:
        flag = "  (excluded)" if row["excluded"] else ""
        lines.append(
            f"  {row['name']:<20} {row['votes']:>7} {_fmt(row['agreement_with_majority']):>12} "
            f"{_fmt(row['gold_accuracy']):>10}{flag}"
        )
    return "\n".join(lines)
