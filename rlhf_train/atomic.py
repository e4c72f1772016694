"""Where a command may write a folder, and writing it all or nothing.

A command that takes `--out` writes a whole folder. Two promises hold for every one of
them:

- It never destroys what it did not write. An existing folder is replaced only when it
  is empty or holds nothing but an earlier output of the same kind (its writer decides:
  `foreign`), and never when it is the workspace or one of the workspace's ancestors, so
  `rlhf export --out . --overwrite` run in the workspace refuses instead of replacing the
  database and the models with a dataset.
- A crash leaves either the old folder or the new one, never half of one: the files are
  written into a hidden staging folder beside the target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from rlhf_train.errors import UserError

# Given an existing, non-empty folder: None when it is an earlier output of this kind
# (so it may be replaced), otherwise a few words on what in it is not.
ForeignCheck = Callable[[Path], "str | None"]


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path):
        path = path.parent
    return path


def _check_place(out: Path, flag: str) -> None:
    existing = _nearest_existing(out.parent)
    if not existing.is_dir():
        raise UserError(
            f"{flag} {out} lies under {existing}, which is a file, not a folder; "
            f"choose another {flag}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} {out} cannot be written: {existing} is not writable for this user; "
            f"choose another {flag} or fix the folder's permissions."
        )


def check_output_folder(
    out: Path,
    *,
    workspace_root: Path | None,
    overwrite: bool,
    foreign: ForeignCheck | None = None,
    kind: str = "",
    flag: str = "--out",
) -> Path:
    """The absolute folder to write `out` to, or a UserError naming why it may not be.

    `overwrite` False refuses any existing folder; True allows replacing an empty one, or
    one in which `foreign` finds nothing that an earlier `kind` did not write (without
    `foreign`, only an empty one).
    """
    out = Path(os.path.abspath(out.expanduser()))
    # A symbolic link is judged by what it points to: replacing the link's target is
    # what the rename would do to the data the user sees through it.
    real = out.resolve()
    if workspace_root is not None:
        root = workspace_root.resolve()
        if real == root or root.is_relative_to(real):
            raise UserError(
                f"{flag} {out} is the workspace or a folder that holds it; "
                f"choose a folder of its own, such as {root / 'exports' / 'NAME'}."
            )
    _check_place(real, flag)
    if not os.path.lexists(real):
        return real
    if not real.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose another {flag}.")
    if not overwrite:
        raise UserError(
            f"{out} already exists; pass --overwrite to replace it or choose another {flag}."
        )
    if not any(real.iterdir()):
        return real
    if foreign is None:
        raise UserError(f"{out} already exists and is not empty; pass a new {flag} folder.")
    reason = foreign(real)
    if reason is not None:
        raise UserError(
            f"{flag} {out} is not an earlier {kind} ({reason}), and only that is replaced; "
            f"choose another {flag} or empty the folder yourself."
        )
    return real


def files_under(folder: Path) -> list[str]:
    """Every entry below `folder` that is not a folder, as relative POSIX paths, without
    following links (a link counts as an entry of its own)."""
    entries = []
    for parent, folders, files in os.walk(folder, followlinks=False):
        base = Path(parent)
        links = [name for name in folders if (base / name).is_symlink()]
        for name in sorted(files + links):
            entries.append((base / name).relative_to(folder).as_posix())
    return sorted(entries)


def write_folder(target: Path, write: Callable[[Path], None], *, replace: bool) -> Path:
    """Call `write(staging)` on an empty hidden folder beside `target`, then put it in
    `target`'s place. An existing `target` is replaced only with `replace` (the caller
    has checked it may be, see check_output_folder); otherwise it is a UserError."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    staging = target.parent / f".{target.name}.partial-{tag}"
    staging.mkdir()
    try:
        write(staging)
        if os.path.lexists(target):
            if not replace:
                raise UserError(f"{target} already exists; choose another name or folder.")
            old = target.parent / f".{target.name}.old-{tag}"
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_text_atomically(path: Path, text: str) -> Path:
    """Write `text` to a file beside `path` and rename it into place: readers see the
    old file or the whole new one, never a part."""
    partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def write_error(flag: str, out: Path, error: OSError) -> UserError:
    """The sentence for an operating-system error met while writing `out`."""
    cause = error.strerror or type(error).__name__
    return UserError(
        f"Could not write {flag} {out}: {cause} ({error.filename or out}); "
        f"free space or fix the permissions, or choose another {flag}."
    )
