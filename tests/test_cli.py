"""The `rlhf` command line: help, the happy path, and one clear sentence with exit code 2
for each kind of bad input."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys

import pytest
from sqlalchemy import select

from db.models import Pair, Round, User
from db.users import password_matches
from rlhf_train.cli import build_parser, main
from rlhf_train.workspace import Workspace


@pytest.fixture
def run(tmp_path, db_url, monkeypatch, capsys):
    """Run `rlhf --workspace WS ARGS...` in-process on `db_url`; returns (code, out, err)."""
    monkeypatch.setenv("RLHF_DB_URL", db_url)
    workspace = tmp_path / "ws"

    def invoke(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--workspace", str(workspace), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    invoke.workspace = workspace
    return invoke


def _open(run) -> Workspace:
    return Workspace.open(run.workspace)


def _fails_with(result: tuple[int, str, str], expected: str) -> None:
    code, _out, err = result
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err


def _subcommands(parser) -> list[tuple[str, object]]:
    found = []
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                nested = _subcommands(sub)
                found += [(f"{name} {n}", p) for n, p in nested] or [(name, sub)]
    return found


def test_every_command_has_help_with_examples() -> None:
    commands = dict(_subcommands(build_parser()))
    expected = {
        "init",
        "up",
        "serve",
        "users add",
        "users list",
        "prompts import",
        "prompts builtin",
        "prompts count",
        "models list",
        "models register",
        "generate",
        "rounds list",
        "rounds show",
    }
    assert expected <= set(commands)
    for name, parser in commands.items():
        assert "examples:" in parser.format_help(), name


def test_each_group_module_holds_its_parsers_and_handlers() -> None:
    """Issue 14: one module of rlhf_train.cli per command group, declaring both the parsers
    and the handlers of its commands; `rlhf` is exactly what those modules declare."""
    import rlhf_train.cli as cli

    declared = set()
    for module in cli.GROUPS:
        parser = argparse.ArgumentParser()
        module.add_commands(parser.add_subparsers())
        for name, sub in _subcommands(parser):
            assert sub.get_default("handler").__module__ == module.__name__, name
            declared.add(name)
    assert declared == set(dict(_subcommands(build_parser())))
    assert "models merge" in declared


# (command, flag, the setting it overrides): one per module that has such flags, and the
# flags whose help used to be only the key, or nothing.
SETTING_FLAGS = [
    ("serve", "--port", "serve.port"),
    ("prompts import", "--eval-fraction", "prompts.eval_fraction"),
    ("generate", "--temperature", "generation.temperature"),
    ("generate", "--device", "runtime.device"),
    ("rounds next", "--max-steps", "optimize.steps"),
    ("simulate", "--cumulative", "loop.cumulative"),
    ("train sft", "--epochs", "sft.epochs"),
    ("train reward", "--epochs", "reward.epochs"),
    ("train reward", "--center-rewards", "reward.center_coefficient"),
    ("train ppo", "--kl-coef", "optimize.kl_coef"),
    ("train dpo", "--lora-targets", "lora.target_modules"),
    ("evaluate policy", "--n-prompts", "evaluate.n_prompts"),
]


@pytest.mark.parametrize(("command", "flag", "key"), SETTING_FLAGS)
def test_a_flag_that_overrides_a_setting_shows_the_settings_help(command, flag, key) -> None:
    from rlhf_train.config import setting_help

    parser = dict(_subcommands(build_parser()))[command]
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert action.help == setting_help(key)


def test_no_flag_names_a_setting_without_its_help() -> None:
    from rlhf_train.config import known_keys, setting_help

    helps = [setting_help(key) for key in known_keys()]
    for name, parser in _subcommands(build_parser()):
        for action in parser._actions:
            rest = action.help or ""
            for text in helps:
                rest = rest.replace(text, "")
            named = [k for k in known_keys() if re.search(rf"(?<![\w.]){re.escape(k)}\b", rest)]
            assert not named, (name, action.option_strings, named)


def test_installed_entry_point_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlhf_train.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("init", "users", "prompts", "models", "generate", "rounds", "serve", "up"):
        assert command in result.stdout


def test_init_twice(run) -> None:
    from migrations.runner import head_revision

    code, out, _ = run("init")
    assert code == 0 and f"schema empty -> {head_revision()}" in out
    code, out, _ = run("init")
    assert code == 0 and f"already at schema revision {head_revision()}" in out


def test_commands_before_init_say_so(run) -> None:
    _fails_with(run("rounds", "list"), "run `rlhf init`")


def test_rounds_next_is_the_command_and_round_next_still_works(run) -> None:
    """`round` and `rounds` were two groups for one noun (issue 14): `rounds next` is the
    command now, and `round next`, which scripts and earlier docs use, stays an alias."""
    run("init")
    for group in ("rounds", "round"):
        _fails_with(run(group, "next"), "There is no round to retrain from")
    assert "rounds (round)" in build_parser().format_help()
    code, out, _ = run("round", "list")
    assert code == 0 and "No rounds yet" in out


def test_users_add_reads_the_password_from_stdin(run) -> None:
    run("init")
    code, out, _ = run("users", "add", "alice", "--role", "annotator", stdin="correct horse\n")
    assert code == 0 and "Added annotator 'alice'" in out
    with _open(run).sessions() as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
    assert alice.password_hash.startswith("$argon2id$")
    assert password_matches(alice.password_hash, "correct horse")
    assert not password_matches(alice.password_hash, "wrong horse")
    _fails_with(
        run("users", "add", "alice", "--role", "lead", stdin="another one\n"), "already exists"
    )
    _fails_with(run("users", "add", "bob", "--role", "lead", stdin="short\n"), "shorter than 8")
    _fails_with(run("users", "add", "bob", "--role", "lead", stdin=""), "No password on standard")
    code, out, _ = run("users", "list")
    assert "alice" in out and "annotator" in out


def test_password_is_never_an_argument(run) -> None:
    with pytest.raises(SystemExit) as exited:
        run("users", "add", "bob", "--role", "lead", "--password", "hunter22")
    assert exited.value.code == 2


def test_prompt_import_counts_duplicates(run, tmp_path) -> None:
    run("init")
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in ["a", "b", "a", "c", "a"]))
    code, out, _ = run("prompts", "import", str(path))
    assert code == 0
    assert "Imported 3 prompts from prompts.jsonl; skipped 2 duplicates within the input" in out
    code, out, _ = run("prompts", "import", str(path))
    assert "Imported 0 prompts" in out and "3 already stored" in out
    code, out, _ = run("prompts", "count")
    assert out.startswith("3 prompts")


def test_bad_prompt_files(run, tmp_path) -> None:
    run("init")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _fails_with(run("prompts", "import", str(empty)), "holds no prompts")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\nnot json\n')
    _fails_with(run("prompts", "import", str(broken)), "line 2 is not valid JSON")
    with _open(run).sessions() as session:
        assert session.scalar(select(Pair)) is None
    code, out, _ = run("prompts", "count")
    assert out.startswith("0 prompts")  # nothing half-imported


def test_generate_then_inspect(run, tiny_policy) -> None:
    run("init")
    code, _, _ = run("prompts", "builtin", "imdb", "--n", "10", "--words", "5")
    assert code == 0
    code, out, _ = run(
        "generate",
        "--round",
        "1",
        "--policy",
        str(tiny_policy),
        "--n-prompts",
        "4",
        "--samples-per-prompt",
        "2",
        "--max-new-tokens",
        "5",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert code == 0 and "Round 1: added 4 prompts, 8 samples" in out
    code, out, _ = run("rounds", "list")
    assert code == 0 and "open" in out and "/" in out
    code, out, _ = run("rounds", "show", "1")
    assert code == 0 and "prompts:         4" in out and "Example pairs:" in out
    code, out, _ = run("models", "list")
    assert code == 0 and "(current policy)" in out and str(tiny_policy.resolve()) in out
    _fails_with(run("rounds", "show", "9"), "There is no round 9")


def test_generate_refusals(run, tiny_policy, tmp_path) -> None:
    run("init")
    run("prompts", "builtin", "imdb", "--n", "6", "--words", "5")
    common = ["--n-prompts", "2", "--max-new-tokens", "3", "--no-progress"]
    _fails_with(run("generate", "--round", "1", "--policy", "nope", *common), "No model 'nope'")
    _fails_with(
        run("generate", "--round", "1", "--policy", str(tmp_path), *common), "is not a model folder"
    )
    _fails_with(
        run(
            "generate", "--round", "1", "--policy", str(tiny_policy), "--temperature", "0", *common
        ),
        "generation.temperature in the command line is 0.0; it must be above 0",
    )
    assert run("generate", "--round", "1", "--policy", str(tiny_policy), *common)[0] == 0
    workspace = _open(run)
    with workspace.sessions() as session, session.begin():
        session.scalar(select(Round)).status = "closed"
    _fails_with(
        run("generate", "--round", "1", "--policy", str(tiny_policy), *common),
        "Round 1 is closed, so no samples can be added to it; generate into a new round with "
        "--round 2.",
    )


def test_models_register(run, tiny_policy, tmp_path) -> None:
    run("init")
    code, out, _ = run("models", "register", "my-policy", str(tiny_policy), "--kind", "policy")
    assert code == 0 and "Registered policy 'my-policy'" in out
    _fails_with(
        run("models", "register", "my-policy", str(tiny_policy), "--kind", "policy"),
        "already registered",
    )
    _fails_with(
        run("models", "register", "other", str(tmp_path / "nowhere"), "--kind", "reward"),
        "neither a model folder nor a hub id",
    )
    code, out, _ = run("models", "list")
    assert "my-policy" in out


def test_unreachable_database(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RLHF_DB_URL", "postgresql+psycopg://x:y@127.0.0.1:1/none")
    code = main(["--workspace", str(tmp_path / "ws"), "init"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Cannot reach the database at") and "y@" not in err
