"""An export folder checked, written and recorded: the one path the preference export and
the raw-votes export both take, so both keep the same `--out` rules and the same row in
the exports table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from db.engine import transaction
from db.models import Export
from rlhf_train.atomic import check_output_folder, write_error
from rlhf_train.errors import UserError
from rlhf_train.export.card import render_card
from rlhf_train.export.writer import not_an_export, write_export
from rlhf_train.workspace import Workspace

FORMATS = ("hf", "jsonl", "parquet")


def check_formats(formats: tuple[str, ...]) -> None:
    if unknown := [f for f in formats if f not in FORMATS]:
        raise UserError(f"Unknown format {unknown[0]!r}; use hf, jsonl, parquet or all.")


def export_folder(workspace: Workspace, out: Path, overwrite: bool) -> Path:
    """Where to write: `out`, if it is new, or (with --overwrite) an earlier export."""
    return check_output_folder(
        out,
        workspace_root=workspace.root,
        foreign=not_an_export,
        kind="prefloop export",
        overwrite=overwrite,
    )


def write_and_record(
    workspace: Workspace,
    out: Path,
    overwrite: bool,
    tables: dict[str, pa.Table],
    provenance: dict[str, Any],
    formats: tuple[str, ...],
    filters: dict[str, Any],
    card: Callable[[dict[str, Any]], str] = render_card,
) -> tuple[str, int]:
    """Write the folder (checked again: it may have changed since the work began) and
    record it in the exports table; (content hash, export id)."""
    folder = export_folder(workspace, out, overwrite)
    try:
        content_hash = write_export(folder, tables, provenance, formats, overwrite, card)
    except OSError as error:
        raise write_error("--out", out, error) from error
    with transaction(workspace.sessions) as session:
        record = Export(
            filters=filters,
            counts=provenance["counts"],
            output_path=str(folder),
            content_hash=content_hash,
        )
        session.add(record)
        session.flush()
        return content_hash, record.id
