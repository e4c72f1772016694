"""Input a user can get wrong ends in one sentence with exit code 2 and nothing stored,
never a traceback: import files (bad encodings, escaped lone surrogates, huge CSV cells,
corrupt Parquet, no real preference), names the database cannot hold or a reader cannot
see, and settings that are not finite numbers."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from db.engine import make_engine
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.models.folder import check_model_name
from rlhf_train.sft.demonstrations import read_demonstrations
from tests.helpers import write_file

Run = Callable[..., tuple[int, str, str]]
PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of the database (what 'nothing stored' compares)."""
    with engine.connect() as connection:
        return {
            table: connection.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar()
            for table in inspect(connection).get_table_names()
            if table != "alembic_version"
        }


def _invoker(url: str, workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Run]:
    """`rlhf --workspace WS ARGS...` in-process on an initialized workspace on `url`."""
    monkeypatch.setenv("RLHF_DB_URL", url)

    def invoke(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--workspace", str(workspace), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert invoke("init")[0] == 0
    invoke.workspace = workspace
    engine = make_engine(url)
    invoke.counts = lambda: row_counts(engine)
    yield invoke
    engine.dispose()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Run]:
    """On SQLite: file readers and settings do not depend on the database."""
    url = f"sqlite:///{tmp_path / 'prefloop.db'}"
    yield from _invoker(url, tmp_path / "ws", monkeypatch, capsys)


@pytest.fixture
def run_db(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Run]:
    """On SQLite, then PostgreSQL: what a column can hold must get the same answer."""
    yield from _invoker(db_url, tmp_path / "ws", monkeypatch, capsys)


def _refused(run: Run, args: tuple[str, ...], expected: str, stdin: str = "") -> str:
    """Run; assert exit 2, one 'error:' line containing `expected`, nothing stored."""
    before = run.counts()
    code, _out, err = run(*args, stdin=stdin)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert run.counts() == before
    return err


def _file(tmp_path: Path, name: str, content: str | bytes) -> str:
    return str(write_file(tmp_path, name, content))


# ---- prompts import -------------------------------------------------------------------


def test_prompt_with_an_escaped_lone_surrogate(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.jsonl", '{"prompt": "fine"}\n{"prompt": "a\\ud800b"}\n')
    _refused(run, ("prompts", "import", path), "p.jsonl line 2 holds an escaped lone surrogate")
    # An escaped surrogate pair is one character and imports.
    path = _file(tmp_path, "ok.jsonl", '{"prompt": "smile \\ud83d\\ude00"}\n')
    assert run("prompts", "import", path)[0] == 0


def test_prompt_csv_cell_over_the_csv_field_limit(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.csv", "prompt\nshort\n" + "x" * 140_000 + "\n")
    err = _refused(run, ("prompts", "import", path), "p.csv line 3 starts a row with a cell")
    assert "never closed" in err
    path = _file(tmp_path, "q.csv", 'prompt\nshort\n"opened but never closed\n' + "y" * 140_000)
    _refused(run, ("prompts", "import", path), "q.csv line 3 starts a row with a cell longer than")


def test_jsonl_lines_end_at_line_feeds_only(run: Run, tmp_path: Path) -> None:
    """U+2028 and U+0085 are allowed raw inside a JSON string; they do not end a line."""
    text = "first\u2028second\x85third"
    path = _file(tmp_path, "p.jsonl", json.dumps({"prompt": text}, ensure_ascii=False) + "\n")
    code, out, err = run("prompts", "import", path)
    assert code == 0, err
    assert "Imported 1 prompts" in out
    pairs = _file(
        tmp_path, "pairs.jsonl", json.dumps(PAIR | {"chosen": text}, ensure_ascii=False) + "\n"
    )
    code, out, err = run("import-preferences", pairs)
    assert code == 0 and "Imported 1 preference pairs" in out, err
    demos = _file(tmp_path, "d.jsonl", json.dumps({"text": text}, ensure_ascii=False) + "\n")
    assert read_demonstrations(demos)["text"] == [text]


def test_prompt_that_is_only_nul_characters(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.jsonl", '{"prompt": "ok"}\n{"prompt": "\\u0000\\u0000"}\n')
    _refused(run, ("prompts", "import", path), "empty once its NUL characters are removed")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tickets\nmore", "The prompt source label 'tickets\\nmore' contains the invisible"),
        ("s" * 201, "The prompt source label is 201 characters long; use at most 200."),
    ],
)
def test_prompt_source_label_the_column_cannot_hold(
    run_db: Run, tmp_path: Path, source: str, expected: str
) -> None:
    path = _file(tmp_path, "p.txt", "a prompt\n")
    _refused(run_db, ("prompts", "import", path, "--source", source), expected)


# ---- import-preferences ---------------------------------------------------------------


def test_preferences_that_are_not_utf8(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.jsonl", b'{"prompt": "p", "chosen": "\xff", "rejected": "b"}\n')
    _refused(run, ("import-preferences", path), "p.jsonl is not UTF-8 text")


def test_preferences_with_an_escaped_lone_surrogate(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.jsonl", '{"prompt": "p", "chosen": "a\\udc00", "rejected": "b"}\n')
    _refused(run, ("import-preferences", path), "p.jsonl line 1 holds an escaped lone surrogate")


@pytest.mark.parametrize(
    "content",
    [b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1", json.dumps(PAIR).encode()],
)
def test_preferences_in_a_corrupt_or_non_parquet_file(
    run: Run, tmp_path: Path, content: bytes
) -> None:
    path = _file(tmp_path, "p.parquet", content)
    _refused(run, ("import-preferences", path), "p.parquet is not a readable Parquet file")


def test_preferences_whose_rows_are_all_identical_pairs(run: Run, tmp_path: Path) -> None:
    same = [PAIR | {"rejected": "a"}, PAIR | {"chosen": "b\x00", "rejected": "b"}]
    path = _file(tmp_path, "p.jsonl", "".join(json.dumps(r) + "\n" for r in same))
    _refused(run, ("import-preferences", path), "Each of the 2 rows of p.jsonl has the same")
    assert "imported" not in run("users", "list")[1]
    assert "imported" not in run("models", "list")[1]
    assert "No rounds yet" in run("rounds", "list")[1]


def test_preferences_whose_text_is_only_nul_characters(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.jsonl", json.dumps(PAIR | {"prompt": "\x00"}) + "\n")
    _refused(run, ("import-preferences", path), "line 1 has no text in column 'prompt'")


def test_preferences_from_csv(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.csv", 'prompt,chosen,rejected\np,"a, with comma",b\nq,c,d\n')
    code, out, err = run("import-preferences", path)
    assert code == 0 and "Imported 2 preference pairs as round 1" in out, err
    path = _file(tmp_path, "short.csv", "prompt,chosen,rejected\np,a\n")
    _refused(run, ("import-preferences", path), "short.csv row 2 has no text in column")


# ---- names ----------------------------------------------------------------------------

BAD_NAMES = [
    ("two\nlines", "U+000A"),
    ("tab\there", "U+0009"),
    ("bell\x07", "U+0007"),
    ("evil\u202egnp.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("embed\u202ax", "U+202A (LEFT-TO-RIGHT EMBEDDING)"),
    ("iso\u2066late", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("pop\u2069", "U+2069 (POP DIRECTIONAL ISOLATE)"),
    ("zero\u200bwidth", "U+200B (ZERO WIDTH SPACE)"),
    ("join\u200dme", "U+200D (ZERO WIDTH JOINER)"),
    ("bom\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("line\u2028sep", "U+2028 (LINE SEPARATOR)"),
    ("undecodable\udcff", "U+DCFF"),
]


@pytest.mark.parametrize(("name", "character"), BAD_NAMES)
def test_user_names_with_invisible_characters(run_db: Run, name: str, character: str) -> None:
    err = _refused(
        run_db,
        ("users", "add", name, "--role", "annotator"),
        f"contains the invisible or control character {character}",
        stdin="long enough password\n",
    )
    assert name not in err  # shown escaped, as repr() writes it
    assert repr(name) in err


def test_user_name_longer_than_its_column(run_db: Run) -> None:
    _refused(
        run_db,
        ("users", "add", "a" * 101, "--role", "annotator"),
        "The user name is 101 characters long; use at most 100.",
        stdin="long enough password\n",
    )
    code, out, err = run_db("users", "add", "b" * 100, "--role", "annotator", stdin="password123\n")
    assert code == 0, err


@pytest.fixture
def model_folder(tmp_path: Path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.mark.parametrize(("name", "character"), BAD_NAMES[:6])
def test_model_names_with_invisible_characters(
    run_db: Run, model_folder: str, name: str, character: str
) -> None:
    _refused(
        run_db,
        ("models", "register", name, model_folder, "--kind", "policy"),
        f"The model name {name!r} contains the invisible or control character {character}",
    )


def test_model_name_longer_than_its_column(run_db: Run, model_folder: str) -> None:
    _refused(
        run_db,
        ("models", "register", "m" * 201, model_folder, "--kind", "policy"),
        "The model name is 201 characters long; use at most 200.",
    )
    assert run_db("models", "register", "m" * 200, model_folder, "--kind", "policy")[0] == 0


def test_trained_model_name_with_a_final_newline() -> None:
    with pytest.raises(UserError, match="cannot name a model"):
        check_model_name("policy-1\n")


# ---- settings -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_float_settings_from_the_environment_must_be_finite(
    run: Run, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RLHF_GENERATION_TEMPERATURE", value)
    _refused(
        run,
        ("prompts", "count"),
        "Setting generation.temperature in the environment variable RLHF_GENERATION_TEMPERATURE is",
    )
    assert "not a finite number" in run("prompts", "count")[2]


@pytest.mark.parametrize("literal", ["inf", "+inf", "-inf", "nan"])
def test_float_settings_in_rlhf_toml_must_be_finite(run: Run, literal: str) -> None:
    settings = run.workspace / "rlhf.toml"
    settings.write_text(f"[sft]\nlearning_rate = {literal}\n", encoding="utf-8")
    _refused(run, ("prompts", "count"), "Setting sft.learning_rate in ")
    assert "not a finite number" in run("prompts", "count")[2]


def test_float_setting_flags_must_be_finite(run: Run, tmp_path: Path) -> None:
    path = _file(tmp_path, "p.txt", "a prompt\n")
    err = _refused(
        run, ("prompts", "import", path, "--eval-fraction", "nan"), "prompts.eval_fraction"
    )
    assert "not a finite number" in err


@pytest.mark.parametrize("flag", ["--noise", "--position-bias", "--time-limit"])
def test_float_flags_that_are_not_settings_must_be_finite(
    flag: str, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--workspace", str(tmp_path / "ws"), "simulate", flag, "nan"])
    assert caught.value.code == 2
    assert f"argument {flag}: 'nan' is not a finite number" in capsys.readouterr().err


# ---- demonstrations (read by `rlhf train sft --data`) ---------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("d.jsonl", '{"text": "a\\ud800"}\n', "d.jsonl line 1 holds an escaped lone surrogate"),
        ("d.csv", "text\n" + "x" * 140_000 + "\n", "d.csv line 2 starts a row with a cell"),
        ("d.jsonl", "[" * 100_000 + "\n", "d.jsonl line 1 nests JSON too deeply"),
    ],
)
def test_demonstration_files_that_cannot_be_read(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    with pytest.raises(UserError, match=expected):
        read_demonstrations(_file(tmp_path, name, content))
