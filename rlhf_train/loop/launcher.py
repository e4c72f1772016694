"""`[worker] launcher`: the command that starts a retraining step in several processes.

A launcher is a command line such as `accelerate launch --multi_gpu --num_processes 8`
or `torchrun --nproc_per_node 8`; a step runs as `LAUNCHER -m rlhf_train.cli ... runs
step JOB STEP`. This module only reads and checks that line, without torch, so the app can
refuse a launcher that cannot start before a job is queued; `loop.launched` runs it.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf_train.errors import UserError, first_line

# Bare names that run the interpreter's own installation (as Workspace.cli_command does),
# so a launcher works without the virtual environment's bin folder on PATH.
MODULE_FORMS = {
    ("accelerate", "launch"): ("accelerate", ["-m", "accelerate.commands.launch"]),
    ("torchrun",): ("torch", ["-m", "torch.distributed.run"]),
}
COUNT_FLAGS = ("--num_processes", "--num-processes", "--nproc_per_node", "--nproc-per-node")
MACHINE_FLAGS = ("--nnodes",)  # torchrun counts per machine; accelerate counts them all
CONFIG_FLAGS = ("--config_file", "--config-file")
FIX = "fix [worker] launcher in rlhf.toml (or RLHF_WORKER_LAUNCHER)"


@dataclass(frozen=True)
class Launcher:
    """A checked launcher: the words to run before `-m rlhf_train.cli ...` and how many
    processes it starts (None when its words do not say, e.g. a hostfile)."""

    words: tuple[str, ...]
    processes: int | None

    def command(self, cli_command: list[str]) -> list[str]:
        """The launched form of `cli_command` (`[python, "-m", "rlhf_train.cli", ...]`)."""
        return [*self.words, *cli_command[1:]]


def parse_launcher(text: str, workspace_root: Path) -> Launcher | None:
    """The launcher `text` names, checked; None when it is empty (one process).

    Raises UserError with one sentence naming the cause and the fix when it cannot start:
    not a command line, a program that is not installed, a config file that is missing
    or unreadable. A relative --config_file is read from the workspace folder.
    """
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UserError(f"worker.launcher {text!r} is not a command line ({exc}); {FIX}.") from exc
    if not words:
        return None
    words = _program(words, text)
    words, from_file = _config_file(words, workspace_root)
    return Launcher(tuple(words), _count(words) or from_file)


def check_workspace_launcher(workspace_root: Path | None) -> None:
    """Refuse (UserError) the [worker] launcher of the workspace at `workspace_root` (its
    rlhf.toml and RLHF_* variables; the variables alone when None) if it cannot start:
    what the app checks before it queues a retraining job."""
    from rlhf_train.config import load_config

    root = workspace_root if workspace_root is not None else Path("/nonexistent-workspace")
    parse_launcher(load_config(root).worker.launcher, root)


def _program(words: list[str], text: str) -> list[str]:
    for prefix, (package, module) in MODULE_FORMS.items():
        if tuple(words[: len(prefix)]) == prefix:
            if importlib.util.find_spec(package) is None:
                raise UserError(
                    f"worker.launcher starts {words[0]!r}, but the package {package!r} is not "
                    f"installed in {sys.executable}; pip install {package}, or {FIX}."
                )
            return [sys.executable, *module, *words[len(prefix) :]]
    program = words[0]
    if shutil.which(program) is None:
        raise UserError(
            f"worker.launcher {text!r} starts {program!r}, which is not installed here (not "
            f"found on PATH); install it or {FIX}."
        )
    return words


def _flag_value(words: list[str], names: tuple[str, ...]) -> tuple[int, str] | None:
    """(index of the value, value) of the first of flags `names`, as `--f V` or `--f=V`."""
    for index, word in enumerate(words):
        name, equals, value = word.partition("=")
        if name in names:
            if equals:
                return index, value
            if index + 1 < len(words):
                return index + 1, words[index + 1]
            raise UserError(f"worker.launcher ends with {word} and no value after it; {FIX}.")
    return None


def _config_file(words: list[str], root: Path) -> tuple[list[str], int | None]:
    """The words with --config_file made absolute, and the process count the file gives."""
    found = _flag_value(words, CONFIG_FLAGS)
    if found is None:
        return words, None
    index, value = found
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise UserError(
            f"worker.launcher names the config file {value}, which does not exist (looked "
            f"for {path}); write it (`accelerate config --config_file {path}`) or {FIX}."
        )
    try:
        text = path.read_text(encoding="utf-8")
        settings = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"The launcher's config file {path} cannot be read ({first_line(exc)}); fix the "
            "file or point --config_file at another."
        ) from exc
    if not isinstance(settings, dict):
        raise UserError(
            f"The launcher's config file {path} holds no settings (a mapping of keys was "
            "expected); write it with `accelerate config` or point --config_file at another."
        )
    words = list(words)
    if words[index] == value:
        words[index] = str(path)
    else:
        words[index] = words[index].partition("=")[0] + "=" + str(path)
    count = settings.get("num_processes")
    return words, count if isinstance(count, int) and count > 0 else None


def _yaml(text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def _count(words: list[str]) -> int | None:
    found = _flag_value(words, COUNT_FLAGS)
    if found is None or not found[1].isdigit() or int(found[1]) == 0:
        return None
    count = int(found[1])
    per_machine = any(word.startswith("--nproc") for word in words)
    machines = _flag_value(words, MACHINE_FLAGS)
    if per_machine and machines is not None and machines[1].isdigit():
        return count * int(machines[1])
    return count
