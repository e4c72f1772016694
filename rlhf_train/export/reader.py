"""Reading an export folder (what `rlhf export --out` wrote) back for training.

The trainers read the Hugging Face copy when the export has one, else the Parquet or
JSON-lines files; the manifest ties the data to the exports row it came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from sqlalchemy import select

from db.models import Export
from rlhf_train.errors import UserError
from rlhf_train.workspace import Workspace

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class PreferenceExport:
    path: Path
    splits: dict[str, Dataset]
    manifest: dict[str, Any]
    export_id: int | None  # the exports row, when the export was made in this workspace

    def split(self, name: str) -> Dataset:
        """Split `name`, which must hold at least one pair."""
        data = self.splits.get(name)
        if data is None or len(data) == 0:
            raise UserError(
                f"The {name} split of the export {self.path} is empty; export again with more "
                "judgments" + (" or a larger --test-fraction." if name == "test" else ".")
            )
        return data


def _load_splits(folder: Path) -> dict[str, Dataset]:
    if (folder / "hf" / "dataset_dict.json").is_file():
        from datasets import load_from_disk

        loaded = load_from_disk(str(folder / "hf"))
        return {name: loaded[name] for name in loaded}
    data = folder / "data"
    for suffix, builder in ((".parquet", "parquet"), (".jsonl", "json")):
        files = {path.stem: str(path) for path in sorted(data.glob(f"*{suffix}"))}
        if files:
            from datasets import load_dataset

            # An empty JSON-lines split has no schema to infer; it is simply absent.
            files = {name: path for name, path in files.items() if Path(path).stat().st_size}
            loaded = load_dataset(builder, data_files=files) if files else {}
            return {name: loaded[name] for name in loaded}
    raise UserError(
        f"The export {folder} has neither hf/ nor data/ files; export again with "
        "`rlhf export --out`."
    )


def read_export(workspace: Workspace | None, path: str | Path) -> PreferenceExport:
    folder = Path(path).expanduser().resolve()
    if not folder.exists():
        raise UserError(f"There is no export at {folder}; create one with `rlhf export --out`.")
    manifest_path = folder / "manifest.json"
    if not folder.is_dir() or not manifest_path.is_file():
        raise UserError(
            f"{folder} is not a prefloop export (it has no manifest.json); pass the folder that "
            "`rlhf export --out` wrote."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"The manifest of {folder} is not valid JSON ({exc}); export again."
        ) from exc
    splits = _load_splits(folder)
    for name, data in splits.items():
        missing = [column for column in REQUIRED_COLUMNS if column not in data.column_names]
        if missing:
            raise UserError(
                f"The {name} split of {folder} lacks the column(s) {', '.join(missing)}; "
                "it is not a preference export; export again with `rlhf export`."
            )
    export_id = None
    if workspace is not None and manifest.get("content_hash"):
        with workspace.sessions() as session:
            export_id = session.scalar(
                select(Export.id)
                .where(Export.content_hash == manifest["content_hash"])
                .order_by(Export.id.desc())
                .limit(1)
            )
    return PreferenceExport(folder, splits, manifest, export_id)
