"""`rlhf export`: judgments become a preference dataset in TRL's format.

The pipeline: read the rounds' pairs and votes column-wise; drop annotators whose gold
accuracy is too low; aggregate each pair's votes (rlhf_train.export.aggregate); apply the pair
filters, counting what each removes; build prompt/chosen/rejected rows; split by prompt;
write every format into a staging folder that is renamed into place only when complete;
record the export in the database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from db.engine import redact
from rlhf_train.errors import UserError
from rlhf_train.export.aggregate import NO_VOTES, Outcomes, aggregate, margin
from rlhf_train.export.publish import check_formats, export_folder, write_and_record
from rlhf_train.export.query import (
    PairTable,
    load_pairs,
    load_votes,
    prompt_conversations,
    prompt_texts,
    sample_texts,
    select_rounds,
    user_names,
)
from rlhf_train.export.rankings import ballots, load_rankings, rankings_by_task
from rlhf_train.export.writer import (
    EXPORTED_COLUMNS,
    arrow_tables,
)
from rlhf_train.judgments.agreement import (
    CATEGORIES,
    CODE,
    RaterStats,
    count_matrix,
    krippendorff_alpha_nominal,
    mean_kendall_tau,
    pairwise_agreement,
    rater_stats,
)
from rlhf_train.prompts.split import is_test_prompt
from rlhf_train.workspace import Workspace

TIE_POLICIES = ("drop", "half")


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    rounds: list[int] | None = None  # None: every round
    formats: tuple[str, ...] = ("hf",)
    ties: str = "drop"
    min_votes: int = 1
    min_agreement: float = 0.0
    exclude_gold: bool = False
    min_gold_accuracy: float | None = None
    test_fraction: float = 0.1
    seed: int = 0
    conversational: bool = False
    overwrite: bool = False

    def check(self) -> None:
        check_formats(self.formats)
        if self.ties not in TIE_POLICIES:
            raise UserError(f"--ties is {self.ties!r}; use drop or half.")
        if self.min_votes < 1:
            raise UserError(f"--min-votes is {self.min_votes}; it must be at least 1.")
        for name, value in (
            ("--min-agreement", self.min_agreement),
            ("--min-gold-accuracy", self.min_gold_accuracy),
        ):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{name} is {value}; it must be between 0 and 1.")
        if not 0 <= self.test_fraction < 1:
            raise UserError(f"--test-fraction is {self.test_fraction}; use at least 0 and below 1.")

    def folder(self, workspace: Workspace) -> Path:
        """Where to write: `out`, if it is new, or (with --overwrite) an earlier export."""
        return export_folder(workspace, self.out, self.overwrite)

    def recorded(self) -> dict[str, Any]:
        """The options that decide the content (not where it is written)."""
        options = asdict(self)
        del options["out"], options["overwrite"]
        options["formats"] = list(self.formats)
        return options


@dataclass
class ExportResult:
    out: Path
    counts: dict[str, int]
    agreement: dict[str, Any]
    content_hash: str
    export_id: int
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportRow:
    """One output row: which pair, which side was preferred, with what margin."""

    pair_index: int
    chosen_side: str  # "A" or "B"
    margin: float


def _agreement_summary(
    counts: np.ndarray,
    annotators: dict[int, RaterStats],
    names: dict[int, str],
    excluded: set[int],
) -> dict[str, Any]:
    """Agreement over the votes used; per annotator over all their votes, excluded or not."""
    return {
        "pairwise_agreement": pairwise_agreement(counts),
        "krippendorff_alpha": krippendorff_alpha_nominal(counts),
        "annotators": [
            {
                "name": names.get(rater, str(rater)),
                "votes": stats.votes,
                "agreement_with_majority": stats.agreement_with_majority,
                "gold_votes": stats.gold_votes,
                "gold_accuracy": stats.gold_accuracy,
                "excluded": rater in excluded,
            }
            for rater, stats in sorted(annotators.items(), key=lambda kv: names.get(kv[0], ""))
        ],
    }


def export_preferences(workspace: Workspace, options: ExportOptions) -> ExportResult:
    options.check()
    options.folder(workspace)  # refuse a bad --out before the work, not after
    with workspace.engine.connect() as connection:
        workspace.sessions  # noqa: B018 - the schema check, before reading
        rounds = select_rounds(connection, options.rounds)
        pairs = load_pairs(connection, rounds)
        votes = load_votes(connection, rounds)
        names = user_names(connection)
        counts: dict[str, int] = {"pairs": len(pairs.ids), "judgments": len(votes.pair_ids)}

        # Rankings become the pairs they order (export/rankings.py), skips are not votes.
        rankings = load_rankings(connection, rounds)
        voted = ballots(pairs, votes, rankings)
        counts.update(voted.counts)
        pairs = voted.pairs
        items, raters, values, strengths = voted.items, voted.raters, voted.values, voted.strengths

        # Annotators below the gold bar are judged on all their votes, then left out.
        annotators = rater_stats(
            items, raters, values, count_matrix(items, values, len(pairs.ids)), pairs.gold
        )
        excluded = {
            rater
            for rater, stats in annotators.items()
            if options.min_gold_accuracy is not None
            and stats.gold_accuracy is not None
            and stats.gold_accuracy < options.min_gold_accuracy
        }
        kept = ~np.isin(raters, list(excluded))
        counts["annotators_excluded"] = len(excluded)
        counts["votes_from_excluded_annotators"] = int((~kept).sum())
        items, raters, values, strengths = items[kept], raters[kept], values[kept], strengths[kept]
        counts["votes_used"] = len(items)

        matrix = count_matrix(items, values, len(pairs.ids))
        agreement = _agreement_summary(matrix, annotators, names, excluded)
        agreement["ranking_kendall_tau"] = mean_kendall_tau(rankings_by_task(rankings))
        outcomes = aggregate(matrix, items, values, strengths)
        rows, pair_counts = select_rows(pairs, outcomes, options)
        counts.update(pair_counts)
        if not rows:
            raise UserError(
                "Nothing is left to export after the filters ("
                + ", ".join(f"{name}: {value}" for name, value in counts.items())
                + "); relax the filters or collect more judgments."
            )
        prompts = prompt_texts(connection, rounds)
        wanted = {int(pairs.sample_a[r.pair_index]) for r in rows}
        wanted |= {int(pairs.sample_b[r.pair_index]) for r in rows}
        samples = sample_texts(connection, rounds, wanted)
        conversations = prompt_conversations(connection, rounds) if options.conversational else {}

    splits = build_splits(rows, pairs, outcomes, prompts, samples, options)
    for split, records in splits.items():
        counts[f"rows_{split}"] = len(records["pair_id"])
        counts[f"prompts_{split}"] = len(set(records["prompt_key"]))
    provenance = {
        "rounds": rounds.numbers,
        "options": options.recorded(),
        "database": redact(workspace.db_url),
        "counts": counts,
        "agreement": agreement,
        "models": _model_counts(splits),
    }
    tables = arrow_tables(splits, options.conversational, conversations)
    # The Python copies of every text are no longer needed; on a large export they are
    # a third of the peak memory while the files are written.
    del splits, samples, prompts, conversations
    content_hash, export_id = write_and_record(
        workspace,
        options.out,
        options.overwrite,
        tables,
        provenance,
        options.formats,
        filters=options.recorded() | {"rounds": rounds.numbers},
    )
    return ExportResult(options.out, counts, agreement, content_hash, export_id)


def select_rows(
    pairs: PairTable, outcomes: Outcomes, options: ExportOptions
) -> tuple[list[ExportRow], dict[str, int]]:
    """The rows to export, and how many pairs each filter removed, in order."""
    remaining = outcomes.outcome != NO_VOTES
    counts = {"pairs_without_votes": int((~remaining).sum())}
    if options.exclude_gold:
        gold = remaining & (pairs.gold >= 0)
        counts["gold_pairs_excluded"] = int(gold.sum())
        remaining &= ~gold
    few = remaining & (outcomes.n_votes < options.min_votes)
    counts["pairs_below_min_votes"] = int(few.sum())
    remaining &= ~few
    weak = remaining & (outcomes.agreement < options.min_agreement)
    counts["pairs_below_min_agreement"] = int(weak.sum())
    remaining &= ~weak
    both_bad = remaining & (outcomes.outcome == CODE["both_bad"])
    counts["pairs_both_bad"] = int(both_bad.sum())
    remaining &= ~both_bad
    ties = remaining & (outcomes.outcome == CODE["tie"])
    counts["pairs_tied"] = int(ties.sum())
    if options.ties == "drop":
        counts["pairs_tied_dropped"] = int(ties.sum())
        remaining &= ~ties
    counts["pairs_exported"] = int(remaining.sum())
    rows: list[ExportRow] = []
    for index in np.flatnonzero(remaining):
        code = outcomes.outcome[index]
        if code == CODE["tie"]:
            # Half a preference each way, margin 0, for trainers that understand it.
            rows += [ExportRow(int(index), "A", 0.0), ExportRow(int(index), "B", 0.0)]
        else:
            strength = margin(outcomes.agreement[index], outcomes.strength[index])
            rows.append(ExportRow(int(index), CATEGORIES[code], strength))
    return rows, counts


def build_splits(
    rows: list[ExportRow],
    pairs: PairTable,
    outcomes: Outcomes,
    prompts: dict[int, tuple[str, str]],
    samples: dict[int, tuple[str, str]],
    options: ExportOptions,
) -> dict[str, dict[str, list]]:
    """The rows as columns per split; a prompt's split depends on its hash and the seed."""
    splits: dict[str, dict[str, list]] = {
        split: {name: [] for name in _COLUMNS} for split in ("train", "test")
    }
    test_prompts: dict[str, bool] = {}
    for row in rows:
        i = row.pair_index
        prompt_text, prompt_hash = prompts[int(pairs.prompt_ids[i])]
        if prompt_hash not in test_prompts:
            test_prompts[prompt_hash] = is_test_prompt(
                prompt_hash, options.test_fraction, options.seed
            )
        a, b = samples[int(pairs.sample_a[i])], samples[int(pairs.sample_b[i])]
        chosen, rejected = (a, b) if row.chosen_side == "A" else (b, a)
        split = "test" if test_prompts[prompt_hash] else "train"
        columns = splits[split]
        columns["prompt"].append(prompt_text)
        columns["chosen"].append(chosen[0])
        columns["rejected"].append(rejected[0])
        columns["margin"].append(row.margin)
        columns["agreement"].append(round(float(outcomes.agreement[i]), 6))
        columns["n_votes"].append(int(outcomes.n_votes[i]))
        columns["round"].append(int(pairs.round_numbers[i]))
        columns["chosen_model"].append(chosen[1])
        columns["rejected_model"].append(rejected[1])
        columns["pair_id"].append(int(pairs.ids[i]))
        columns["prompt_key"].append(prompt_hash)
    return splits


# prompt_key (the prompt's content hash) is internal: it counts prompts per split.
_COLUMNS = (*EXPORTED_COLUMNS, "prompt_key")


def _model_counts(splits: dict[str, dict[str, list]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for columns in splits.values():
        for name in columns["chosen_model"] + columns["rejected_model"]:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
