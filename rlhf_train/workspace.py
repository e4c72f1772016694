"""A workspace folder: settings, the SQLite database, model cache, checkpoints, exports,
reports and logs. Commands open one with `Workspace.open` and get its database from it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, redact, session_factory
from migrations.runner import current_revision, head_revision, is_known_revision
from rlhf_train.config import CONFIG_FILE, Config, default_config_text, load_config
from rlhf_train.errors import UserError

DEFAULT_WORKSPACE = Path("rlhf-workspace")
DATABASE_FILE = "prefloop.db"
SUBFOLDERS = ("models", "checkpoints", "exports", "reports", "logs")


def workspace_path(given: str | os.PathLike[str] | None = None) -> Path:
    """--workspace, else RLHF_WORKSPACE, else ./rlhf-workspace."""
    chosen = given or os.environ.get("RLHF_WORKSPACE") or DEFAULT_WORKSPACE
    return Path(chosen).expanduser().resolve()


@dataclass
class Workspace:
    root: Path
    config: Config

    @classmethod
    def open(cls, root: Path, overrides: dict[str, Any] | None = None) -> Workspace:
        if root.exists() and not root.is_dir():
            raise UserError(f"The workspace path {root} is a file; pass a folder with --workspace.")
        return cls(root=root, config=load_config(root, overrides))

    def cli_command(self, *args: str) -> list[str]:
        """`rlhf --workspace ROOT ARGS...` as a child process runs it (this interpreter, so
        the same installation; the module form, so no PATH lookup)."""
        return [sys.executable, "-m", "rlhf_train.cli", "--workspace", str(self.root), *args]

    @property
    def db_url(self) -> str:
        return self.config.database.url or f"sqlite:///{self.root / DATABASE_FILE}"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def create_layout(self) -> None:
        """The folders and a commented rlhf.toml; existing files are left alone."""
        for name in SUBFOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        settings = self.root / CONFIG_FILE
        if not settings.exists():
            settings.write_text(default_config_text(), encoding="utf-8")

    @cached_property
    def engine(self) -> Engine:
        if self.db_url.startswith("sqlite") and not self.root.is_dir():
            raise UserError(f"There is no workspace at {self.root}; run `rlhf init` first.")
        return make_engine(self.db_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on a database whose schema is at the revision this code expects."""
        found, expected = current_revision(self.engine), head_revision()
        if found is None:
            raise UserError(
                f"The database {redact(self.db_url)} has no prefloop tables yet; run `rlhf init`."
            )
        if found != expected and not is_known_revision(found):
            raise UserError(
                f"The database {redact(self.db_url)} is at schema revision {found}, newer than "
                f"this version of prefloop knows (its newest is {expected}); upgrade prefloop."
            )
        if found != expected:
            raise UserError(
                f"The database {redact(self.db_url)} is at schema revision {found} but this "
                f"version of prefloop needs {expected}; run `rlhf init` to upgrade it."
            )
        return session_factory(self.engine)
