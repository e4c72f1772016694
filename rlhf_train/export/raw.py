"""`rlhf export --raw`: every judgment as one row, for researchers.

Nothing is aggregated or filtered away: skips, ties, both-bad and gold pairs are rows like
any other. Annotators appear as pseudonyms: the first 12 hex digits of
sha256(salt + annotator id), with a salt drawn anew for each export and never written
anywhere, so a pseudonym names the same annotator throughout one export and means
nothing outside it. The folder has the preference export's layout (hf/, data/, the card
and the manifest) with a single split, `train`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, select

from db.engine import redact
from db.models import CHOICES, Judgment, Pair, Round
from rlhf_train.errors import UserError
from rlhf_train.export.card import RAW_COUNT_LABELS, render_raw_card
from rlhf_train.export.publish import check_formats, export_folder, write_and_record
from rlhf_train.export.query import (
    RoundSelection,
    prompt_conversations,
    prompt_texts,
    sample_texts,
    select_rounds,
)
from rlhf_train.export.writer import MESSAGE, as_messages, prompt_messages
from rlhf_train.workspace import Workspace

KIND = "raw_votes"
SPLIT = "train"
PSEUDONYM_DIGITS = 12


@dataclass(frozen=True)
class RawExportOptions:
    out: Path
    rounds: list[int] | None = None  # None: every round
    formats: tuple[str, ...] = ("hf",)
    conversational: bool = False
    overwrite: bool = False

    def check(self) -> None:
        check_formats(self.formats)

    def folder(self, workspace: Workspace) -> Path:
        """Where to write: `out`, if it is new, or (with --overwrite) an earlier export."""
        return export_folder(workspace, self.out, self.overwrite)

    def recorded(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "formats": list(self.formats),
            "conversational": self.conversational,
            "rounds": self.rounds,
        }


@dataclass(frozen=True)
class RawExportResult:
    out: Path
    counts: dict[str, int]
    content_hash: str
    export_id: int


@dataclass(frozen=True)
class JudgmentTable:
    """One row per judgment of the selected rounds, in id order."""

    pair_ids: list[int]
    round_numbers: list[int]
    strategies: list[str]
    gold: list[str | None]
    prompt_ids: list[int]
    sample_a: list[int]
    sample_b: list[int]
    annotator_ids: list[int]
    choices: list[str]
    strengths: list[int | None]
    flags: list[list[str]]
    left_samples: list[str]
    ms_spent: list[int]
    times: list[str]
    # Ranking judgments (db.ranking): groups of sample ids best first, and the sample ids
    # in the order shown; None for pairwise judgments.
    rankings: list[list[list[int]] | None]
    display_orders: list[list[int] | None]


def _columns(rows: Sequence[tuple], count: int) -> list[list]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * count


def _flag_names(flags: Any) -> list[str]:
    # The app stores {flag: True}; a flag set to anything falsy was not raised.
    return sorted(str(name) for name, on in flags.items() if on) if flags else []


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def load_judgments(connection: Connection, rounds: RoundSelection) -> JudgmentTable:
    query = (
        select(
            Judgment.pair_id,
            Round.number,
            Pair.strategy,
            Pair.gold_choice,
            Pair.prompt_id,
            Pair.sample_a_id,
            Pair.sample_b_id,
            Judgment.annotator_id,
            Judgment.choice,
            Judgment.strength,
            Judgment.flags,
            Judgment.left_sample,
            Judgment.ms_spent,
            Judgment.created_at,
            Judgment.ranking,
            Judgment.display_order,
        )
        .join(Pair, Pair.id == Judgment.pair_id)
        .join(Round, Round.id == Pair.round_id)
        .where(Pair.round_id.in_(rounds.ids))
        .order_by(Judgment.id)
    )
    columns = _columns(connection.execute(query).all(), 16)
    columns[10] = [_flag_names(flags) for flags in columns[10]]
    columns[13] = [_iso(moment) for moment in columns[13]]
    return JudgmentTable(*columns)


def pseudonyms(annotator_ids: list[int], salt: bytes) -> dict[int, str]:
    """Annotator id -> its pseudonym under `salt` (distinct for distinct ids)."""
    names = {
        annotator: "annotator-"
        + hashlib.sha256(salt + str(annotator).encode()).hexdigest()[:PSEUDONYM_DIGITS]
        for annotator in set(annotator_ids)
    }
    if len(set(names.values())) < len(names):
        raise ValueError("two annotators share a pseudonym under this salt")
    return names


def fresh_pseudonyms(annotator_ids: list[int]) -> dict[int, str]:
    """Pseudonyms under a new random salt, which is forgotten when this returns."""
    while True:
        try:
            return pseudonyms(annotator_ids, secrets.token_bytes(32))
        except ValueError:  # 48 bits collide about never; then a new salt settles it
            continue


def _text_type(conversational: bool) -> pa.DataType:
    return pa.list_(MESSAGE) if conversational else pa.string()


def raw_schema(conversational: bool) -> pa.Schema:
    text = _text_type(conversational)
    return pa.schema(
        [
            ("pair_id", pa.int64()),
            ("round", pa.int64()),
            ("strategy", pa.string()),
            ("prompt", text),
            ("response_a", text),
            ("response_b", text),
            ("policy_a", pa.string()),
            ("policy_b", pa.string()),
            ("annotator", pa.string()),
            ("choice", pa.string()),
            ("strength", pa.int64()),
            ("flags", pa.list_(pa.string())),
            ("left_sample", pa.string()),
            ("ms_spent", pa.int64()),
            ("time", pa.string()),
            ("gold_choice", pa.string()),
            ("ranking", pa.list_(pa.list_(pa.int64()))),
            ("display_order", pa.list_(pa.int64())),
            ("responses_shown", pa.list_(pa.string())),
        ]
    )


def raw_table(
    judgments: JudgmentTable,
    prompts: dict[int, tuple[str, str]],
    samples: dict[int, tuple[str, str]],
    names: dict[int, str],
    conversational: bool,
    conversations: dict[str, list[dict[str, str]]] | None = None,
) -> pa.Table:
    """One row per judgment; with `conversational`, a prompt that is a conversation
    (`conversations`: content hash -> messages) is written whole."""
    prompt = [prompts[pid][0] for pid in judgments.prompt_ids]
    response_a = [samples[sid][0] for sid in judgments.sample_a]
    response_b = [samples[sid][0] for sid in judgments.sample_b]
    if conversational:
        hashes = [prompts[pid][1] for pid in judgments.prompt_ids]
        prompt = prompt_messages(prompt, hashes, conversations or {})
        response_a = as_messages(response_a, "assistant")
        response_b = as_messages(response_b, "assistant")
    data = {
        "pair_id": judgments.pair_ids,
        "round": judgments.round_numbers,
        "strategy": judgments.strategies,
        "prompt": prompt,
        "response_a": response_a,
        "response_b": response_b,
        "policy_a": [samples[sid][1] for sid in judgments.sample_a],
        "policy_b": [samples[sid][1] for sid in judgments.sample_b],
        "annotator": [names[annotator] for annotator in judgments.annotator_ids],
        "choice": judgments.choices,
        "strength": judgments.strengths,
        "flags": judgments.flags,
        "left_sample": judgments.left_samples,
        "ms_spent": judgments.ms_spent,
        "time": judgments.times,
        "gold_choice": judgments.gold,
        "ranking": judgments.rankings,
        "display_order": judgments.display_orders,
        "responses_shown": [
            None if order is None else [samples[sid][0] for sid in order]
            for order in judgments.display_orders
        ],
    }
    return pa.Table.from_pydict(data, schema=raw_schema(conversational))


def raw_counts(judgments: JudgmentTable) -> dict[str, int]:
    counts = {"judgments": len(judgments.choices)}
    counts.update(
        {f"choice_{choice}": judgments.choices.count(choice) for choice in CHOICES},
    )
    counts["pairs_judged"] = len(set(judgments.pair_ids))
    counts["prompts"] = len(set(judgments.prompt_ids))
    counts["annotators"] = len(set(judgments.annotator_ids))
    counts["gold_judgments"] = sum(gold is not None for gold in judgments.gold)
    return counts


def _model_counts(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in table.column("policy_a").to_pylist() + table.column("policy_b").to_pylist():
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def export_raw(workspace: Workspace, options: RawExportOptions) -> RawExportResult:
    options.check()
    options.folder(workspace)  # refuse a bad --out before the work, not after
    with workspace.engine.connect() as connection:
        workspace.sessions  # noqa: B018 - the schema check, before reading
        rounds = select_rounds(connection, options.rounds)
        judgments = load_judgments(connection, rounds)
        if not judgments.choices:
            which = "round" if len(rounds.numbers) == 1 else "rounds"
            raise UserError(
                f"There are no judgments in {which} {', '.join(map(str, rounds.numbers))} yet; "
                "export once annotators have judged some pairs."
            )
        prompts = prompt_texts(connection, rounds)
        shown = {sid for order in judgments.display_orders if order for sid in order}
        samples = sample_texts(
            connection, rounds, set(judgments.sample_a + judgments.sample_b) | shown
        )
        conversations = prompt_conversations(connection, rounds) if options.conversational else {}
    names = fresh_pseudonyms(judgments.annotator_ids)
    table = raw_table(judgments, prompts, samples, names, options.conversational, conversations)
    counts = raw_counts(judgments)
    counts[f"rows_{SPLIT}"] = table.num_rows
    del judgments, prompts, samples
    provenance = {
        "kind": KIND,
        "rounds": rounds.numbers,
        "options": options.recorded() | {"rounds": rounds.numbers},
        "database": redact(workspace.db_url),
        "counts": counts,
        "models": _model_counts(table),
        "pseudonyms": f"annotator-<first {PSEUDONYM_DIGITS} hex digits of sha256(salt + "
        "annotator id)>, salt random per export and not stored",
    }
    content_hash, export_id = write_and_record(
        workspace,
        options.out,
        options.overwrite,
        {SPLIT: table},
        provenance,
        options.formats,
        filters=provenance["options"],
        card=render_raw_card,
    )
    return RawExportResult(options.out, counts, content_hash, export_id)


def describe_raw_export(result: RawExportResult) -> str:
    counts = result.counts
    lines = [
        f"Exported {counts['judgments']} judgments (one row each) to {result.out} "
        f"(export #{result.export_id}, content hash {result.content_hash[:12]}); annotators "
        "are pseudonyms valid within this export only.",
        "",
    ]
    width = max(len(label) for label in RAW_COUNT_LABELS.values())
    lines += [f"  {RAW_COUNT_LABELS.get(k, k):<{width}}  {v}" for k, v in counts.items()]
    return "\n".join(lines)
