"""`rlhf import-preferences`: an existing preference dataset becomes prompts, samples,
pairs and judgments, so a team can start from old or public data and mix it with new
rounds. Each import is a new closed round (annotators never see it), judged by the
inactive annotator 'imported' with the policy 'imported' as the author of every text.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.conversations import check_messages
from db.models import Judgment, Round, User, utcnow
from db.prompts import PromptItem, add_prompts, prompt_hash, prompt_ids_by_hash
from db.registry import find_model, register_model
from db.rounds import NewPair, NewSample, add_samples_and_pairs, next_round_number
from db.text import storable
from db.users import hash_password
from rlhf_train.errors import UserError, first_line
from rlhf_train.prompts.sources import json_lines, open_csv

IMPORTED = "imported"
COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferenceRow:
    prompt: PromptItem  # a text, or a conversation's checked messages
    chosen: str
    rejected: str


@dataclass(frozen=True)
class ImportReport:
    round_number: int
    pairs: int
    skipped_identical: int
    prompts_added: int

    def summary(self) -> str:
        skipped = (
            f"; skipped {self.skipped_identical} rows whose chosen and rejected are identical"
            if self.skipped_identical
            else ""
        )
        return (
            f"Imported {self.pairs} preference pairs as round {self.round_number} (closed), "
            f"{self.prompts_added} new prompts{skipped}."
        )


def _prompt(value: Any, where: str) -> PromptItem:
    """A prompt cell: a string, or a message list kept whole (system, history and the
    last user turn: db/conversations.py's rules)."""
    if isinstance(value, list):
        return check_messages(value, f"{where} column 'prompt'")
    return _text(value, "prompt", where)


def _response(value: Any, column: str, where: str) -> str:
    """A chosen or rejected cell: a string, or one assistant message (TRL's
    conversational form); a user or system message is no response."""
    if isinstance(value, list):
        roles = [m.get("role") if isinstance(m, dict) else None for m in value]
        if roles != ["assistant"]:
            found = ", ".join(repr(role)[:40] for role in roles[:4]) or "no message"
            if len(roles) > 4:
                found += f" and {len(roles) - 4} more messages"
            raise UserError(
                f"{where} column {column!r} holds {found} where one assistant message "
                'belongs; write it as [{"role": "assistant", "content": "..."}] or as text.'
            )
        value = value[0].get("content")
    return _text(value, column, where)


def _text(value: Any, column: str, where: str) -> str:
    """A cell as text: a non-empty string."""
    # NUL characters are dropped when stored (db.text.storable), so they are no text.
    if not isinstance(value, str) or not storable(value).strip():
        raise UserError(
            f"{where} has no text in column {column!r}; every row needs non-empty prompt, "
            "chosen and rejected."
        )
    return value


def _rows(records: list[dict[str, Any]], describe) -> list[PreferenceRow]:
    rows = []
    for index, record in enumerate(records):
        where = describe(index)
        missing = [column for column in COLUMNS if column not in record]
        if missing:
            raise UserError(
                f"{where} has no {missing[0]!r} column; a preference dataset needs prompt, "
                "chosen and rejected."
            )
        rows.append(
            PreferenceRow(
                _prompt(record["prompt"], where),
                _response(record["chosen"], "chosen", where),
                _response(record["rejected"], "rejected", where),
            )
        )
    return rows


def _jsonl_records(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The objects of a .jsonl file and the line number of each."""
    records, lines = [], []
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise UserError(f"{path} line {number} is not a JSON object; write one per line.")
        records.append(record)
        lines.append(number)
    return records, lines


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not a readable Parquet file ({first_line(exc).rstrip('.')}); write it "
            "again with pandas or pyarrow, or pass a .jsonl or .csv file."
        ) from None


def read_preference_rows(path: Path) -> list[PreferenceRow]:
    """Rows from a save_to_disk folder, a .jsonl, a .csv or a .parquet file."""
    if path.is_dir():
        from datasets import Dataset, DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(
                f"{path} is not a folder written by save_to_disk; pass that folder (for a "
                "prefloop export, its hf/ subfolder), a .jsonl or a .parquet file."
            ) from exc
        parts = (
            [(name, loaded[name]) for name in loaded]
            if isinstance(loaded, DatasetDict)
            else [("data", loaded)]
        )
        rows = []
        for name, dataset in parts:
            assert isinstance(dataset, Dataset)
            rows += _rows(dataset.to_list(), lambda i, n=name: f"{path} split {n} row {i + 1}")
    elif path.suffix == ".jsonl" and path.is_file():
        records, lines = _jsonl_records(path)
        rows = _rows(records, lambda i: f"{path} line {lines[i]}")
    elif path.suffix == ".csv" and path.is_file():
        # Row 1 is the header, as a spreadsheet numbers it.
        rows = _rows(list(open_csv(path)), lambda i: f"{path} row {i + 2}")
    elif path.suffix == ".parquet" and path.is_file():
        rows = _rows(_parquet_records(path), lambda i: f"{path} row {i + 1}")
    elif not path.exists():
        raise UserError(f"There is no {path}; check the path.")
    else:
        raise UserError(
            f"{path} is not a save_to_disk folder, .jsonl, .csv or .parquet file; convert it "
            "to one."
        )
    if not rows:
        raise UserError(f"{path} holds no preference rows; nothing to import.")
    return rows


def _storable(prompt: PromptItem) -> PromptItem:
    # A conversation's contents were made storable when checked.
    return storable(prompt) if isinstance(prompt, str) else prompt


def _imported_annotator(session: Session) -> User:
    user = session.scalar(select(User).where(User.name == IMPORTED))
    if user is None:
        # Nobody can log in as it: inactive, with a password nobody knows.
        user = User(
            name=IMPORTED,
            role="annotator",
            password_hash=hash_password(secrets.token_urlsafe(32)),
            active=False,
        )
        session.add(user)
        session.flush()
    return user


def import_preferences(session: Session, rows: list[PreferenceRow], source: str) -> ImportReport:
    """Store `rows` as a new closed round; all in the caller's transaction."""
    kept = [
        PreferenceRow(_storable(r.prompt), storable(r.chosen), storable(r.rejected))
        for r in rows
        if storable(r.chosen) != storable(r.rejected)
    ]
    if not kept:
        # Checked before anything is stored: not even the 'imported' annotator and policy.
        which = "The one row" if len(rows) == 1 else f"Each of the {len(rows)} rows"
        raise UserError(
            f"{which} of {source} has the same chosen and rejected text, so there is no "
            "preference to import; check the chosen and rejected columns."
        )
    annotator = _imported_annotator(session)
    policy = find_model(session, IMPORTED) or register_model(
        session,
        name=IMPORTED,
        kind="policy",
        path=IMPORTED,
        config={"note": "author of imported preference data; not loadable"},
    )
    prompt_import = add_prompts(session, [r.prompt for r in kept], source=source, chat=False)
    prompt_ids = prompt_ids_by_hash(session, (prompt_hash(r.prompt) for r in kept))
    round_ = Round(
        number=next_round_number(session),
        status="closed",
        policy_id=policy.id,
        overlap=1,
        closed_at=utcnow(),
        guidelines=f"Imported from {source}.",
    )
    session.add(round_)
    session.flush()
    samples: list[NewSample] = []
    pairs: list[NewPair] = []
    decoding = {"imported_from": source}
    for row in kept:
        prompt_id = prompt_ids[prompt_hash(row.prompt)]
        for text in (row.chosen, row.rejected):
            samples.append(
                NewSample(
                    prompt_id=prompt_id,
                    policy_id=policy.id,
                    text=text,
                    decoding=decoding,
                    seed=0,
                    token_count=0,
                    finished=True,
                )
            )
        pairs.append(NewPair(len(samples) - 2, len(samples) - 1, "imported"))
    created = add_samples_and_pairs(session, round_, samples, pairs)
    for pair in created:
        pair.judgment_count = 1
    session.add_all(
        Judgment(pair_id=pair.id, annotator_id=annotator.id, choice="A", left_sample="A")
        for pair in created
    )
    session.flush()
    return ImportReport(
        round_number=round_.number,
        pairs=len(created),
        skipped_identical=len(rows) - len(kept),
        prompts_added=prompt_import.added,
    )
