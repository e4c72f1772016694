"""Writing an export folder: the data in each format, the dataset card and the manifest.

Everything is written into a staging folder beside the target and renamed into place
only when complete, so a crash never leaves a half dataset that looks whole. Nothing
in the files depends on the time or the output path, so the same database and options
give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_train.atomic import files_under, write_folder
from rlhf_train.export.card import render_card

EXPORTED_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "margin",
    "agreement",
    "n_votes",
    "round",
    "chosen_model",
    "rejected_model",
    "pair_id",
)
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def _schema(conversational: bool) -> pa.Schema:
    text = pa.list_(MESSAGE) if conversational else pa.string()
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("margin", pa.float64()),
            ("agreement", pa.float64()),
            ("n_votes", pa.int64()),
            ("round", pa.int64()),
            ("chosen_model", pa.string()),
            ("rejected_model", pa.string()),
            ("pair_id", pa.int64()),
        ]
    )


def as_messages(texts: list[str], role: str) -> list[list[dict[str, str]]]:
    """Each text as a one-message conversation of `role` (the --conversational form)."""
    return [[{"role": role, "content": text}] for text in texts]


def prompt_messages(
    texts: list[str], hashes: list[str], conversations: dict[str, list[dict[str, str]]]
) -> list[list[dict[str, str]]]:
    """The --conversational prompt of each row: a conversation's messages whole (found by
    its content hash), a plain prompt as one user message."""
    return [
        conversations.get(digest) or [{"role": "user", "content": text}]
        for text, digest in zip(texts, hashes, strict=True)
    ]


def arrow_tables(
    splits: dict[str, dict[str, list]],
    conversational: bool,
    conversations: dict[str, list[dict[str, str]]] | None = None,
) -> dict[str, pa.Table]:
    """The exported columns of each split as an Arrow table (internal columns left out);
    `conversations` (content hash -> messages) gives the prompts that are conversations."""
    return {
        split: _table(columns, conversational, conversations or {})
        for split, columns in splits.items()
    }


def _table(
    columns: dict[str, list], conversational: bool, conversations: dict[str, list[dict[str, str]]]
) -> pa.Table:
    data = {name: columns[name] for name in EXPORTED_COLUMNS}
    if conversational:
        data["prompt"] = prompt_messages(data["prompt"], columns["prompt_key"], conversations)
        data["chosen"] = as_messages(data["chosen"], "assistant")
        data["rejected"] = as_messages(data["rejected"], "assistant")
    return pa.Table.from_pydict(data, schema=_schema(conversational))


def _write_hf(folder: Path, tables: dict[str, pa.Table]) -> None:
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()  # a bar per split and shard says nothing `rlhf export` does not

    # One shard per split, stated explicitly: datasets writes no shard at all for an
    # empty split otherwise, and then cannot load the folder back.
    DatasetDict({split: Dataset(table) for split, table in tables.items()}).save_to_disk(
        str(folder), num_shards={split: 1 for split in tables}
    )


def _write_jsonl(path: Path, table: pa.Table) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in table.to_pylist():
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _file_hashes(folder: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hashes[path.relative_to(folder).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return hashes


def _content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, file_hash in files.items():
        digest.update(f"{name}\0{file_hash}\n".encode())
    return digest.hexdigest()


def not_an_export(folder: Path) -> str | None:
    """None when `folder` holds nothing but an earlier export (its manifest lists every
    data file, beside the manifest and the card), else what in it is not one."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "it has no readable prefloop manifest.json"
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or not isinstance(manifest.get("content_hash"), str):
        return "its manifest.json is not a prefloop export's"
    ours = set(listed) | {"manifest.json", "README.md"}
    others = [name for name in files_under(folder) if name not in ours]
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        return f"it holds {others[0]}{more}, which the export did not write"
    return None


def write_export(
    out: Path,
    tables: dict[str, pa.Table],
    provenance: dict[str, Any],
    formats: tuple[str, ...],
    overwrite: bool,
    card: Callable[[dict[str, Any]], str] = render_card,
) -> str:
    """Write the export folder `out` and return the content hash of its data files.

    `out` has been checked (ExportOptions.check): with `overwrite`, what it replaces is
    empty or an earlier export. `card` renders the README.md from the manifest (the raw
    votes export has its own)."""
    content_hash = ""

    def write(staging: Path) -> None:
        nonlocal content_hash
        if "hf" in formats:
            _write_hf(staging / "hf", tables)
        if "jsonl" in formats or "parquet" in formats:
            (staging / "data").mkdir()
        for split, table in tables.items():
            if "jsonl" in formats:
                _write_jsonl(staging / "data" / f"{split}.jsonl", table)
            if "parquet" in formats:
                pq.write_table(table, staging / "data" / f"{split}.parquet")
        files = _file_hashes(staging)
        content_hash = _content_hash(files)
        manifest = dict(provenance, content_hash=content_hash, files=files)
        (staging / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (staging / "README.md").write_text(card(manifest), encoding="utf-8")

    write_folder(out, write, replace=overwrite)
    return content_hash
