"""Property: whatever file a user hands an import command, it either imports (exit 0) or
says why in one sentence (exit 2) having stored nothing; it never raises.

The commands run in-process through `rlhf_train.cli.main` against one real SQLite
workspace per test; the files are random bytes, random JSON Lines (with the shapes the
readers look for, lone surrogates, NULs and line separators mixed in) and random CSV
(well-quoted or naively joined). Demonstrations have no import command of their own (they
are read by `rlhf train sft --data`), so their reader is held to the same rule.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from db.engine import make_engine
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.sft.demonstrations import read_demonstrations
from tests.test_hostile_input import row_counts

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = ["prompt", "chosen", "rejected", "text", "completion", "messages", "role", "content"]
TRICKY = ["\ud800", "\udfff", "\x00", "\u2028", "\x85", "\ufeff", "\u202e", '"', ",", "\n"]

# Text with the characters that broke readers before: lone surrogates (which the JSON
# encoder escapes, and which become invalid UTF-8 when written raw), NUL, U+2028, quotes.
texts = st.text(alphabet=st.one_of(st.characters(codec=None), st.sampled_from(TRICKY)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]), "content": texts}),
    max_size=3,
)
plain = st.text(min_size=1, max_size=12)
# Sure to hold one of the characters that broke a reader, inside otherwise good text.
tricky = st.builds("".join, st.tuples(plain, st.sampled_from(TRICKY), plain))
# Records shaped like what the readers want, so the tests get past "no such key", and
# some that are valid (so imports that succeed are exercised too).
records = (
    st.fixed_dictionaries({key: plain for key in KEYS[:3]}, optional={"text": plain})
    | st.fixed_dictionaries({key: tricky for key in KEYS[:3]}, optional={"text": tricky})
    | st.dictionaries(st.sampled_from(KEYS), st.one_of(texts, messages, json_values), max_size=5)
    | json_values
)


def _encode(text: str) -> bytes:
    # Lone surrogates written as their raw code units: bytes that are not UTF-8.
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = [
        json.dumps(record, ensure_ascii=draw(st.booleans()), allow_nan=True)
        for record in draw(st.lists(records, max_size=5))
    ]
    if draw(st.booleans()):  # a broken line among good ones
        lines.insert(draw(st.integers(0, len(lines))), draw(texts))
    return _encode("\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"])))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(
        st.just(KEYS[:3]) | st.lists(st.sampled_from(KEYS) | texts, min_size=1, max_size=4)
    )
    cells = st.lists(plain | texts, min_size=len(header) - 1, max_size=5)
    rows = draw(st.lists(cells, max_size=5))
    if rows and rows[-1] and draw(st.integers(0, 5)) == 0:
        # Over csv.field_size_limit (128 KiB), as a cell after an unclosed quote gets.
        rows[-1][-1] = draw(st.sampled_from(['"', ""])) + "x" * 140_000
    if draw(st.booleans()):
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows([header, *rows])
        text = buffer.getvalue()
    else:  # joined naively: stray quotes and commas as a hand-written file has them
        text = "\n".join(",".join(row) for row in [header, *rows])
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + _encode(text)


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    n = draw(st.integers(0, 4))
    column = st.one_of(
        st.lists(plain, min_size=n, max_size=n),
        st.lists(st.none() | st.text(max_size=12), min_size=n, max_size=n),
        st.lists(st.integers(-5, 5), min_size=n, max_size=n),
        # Arrow holds UTF-8 only: no lone surrogates in what it writes.
        st.lists(
            st.lists(st.fixed_dictionaries({"role": plain, "content": plain}), max_size=2),
            min_size=n,
            max_size=n,
        ),
    )
    names = draw(
        st.just(KEYS[:3]) | st.lists(st.sampled_from([*KEYS[:3], "other"]), unique=True, max_size=4)
    )
    table = pa.table({name: draw(column) for name in names}) if names else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    if draw(st.integers(0, 2)) == 0:  # a byte flipped, or cut short
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1 :] if cut < len(data) else data
    return data


any_bytes = st.binary(max_size=300)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str, bytes], int]]:
    """`cli(command, name, content)`: write the file `name`, run `rlhf COMMAND FILE`, check
    the exit code and that a refusal stored nothing, and return the code."""
    root = tmp_path_factory.mktemp("properties")
    # The workspace's own SQLite file: the autouse fixture that clears RLHF_* variables
    # runs per test, after this module-wide fixture, so RLHF_DB_URL would not survive.
    workspace = root / "ws"
    common = ["--workspace", str(workspace)]
    assert _quiet(lambda: main([*common, "init"])) == 0
    engine = make_engine(f"sqlite:///{workspace / 'prefloop.db'}")

    def run(command: str, name: str, content: bytes) -> int:
        path = root / name
        path.write_bytes(content)
        before = row_counts(engine)
        code = _quiet(lambda: main([*common, *command.split(), str(path)]))
        assert code in (0, 2)
        event(f"exit {code}")  # --hypothesis-show-statistics: both outcomes occur
        if code == 2:
            assert row_counts(engine) == before
        return code

    yield run
    engine.dispose()


def _quiet(call: Callable[[], Any]) -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return call()


# Each import command with the files it reads, well-formed or not; parquet files are
# generated whole, since random bytes only ever test "not a Parquet file".
IMPORTS = {
    "prompts-jsonl": ("prompts import", "p.jsonl", jsonl_files() | any_bytes),
    "prompts-csv": ("prompts import", "p.csv", csv_files() | any_bytes),
    "preferences-jsonl": ("import-preferences", "prefs.jsonl", jsonl_files() | any_bytes),
    "preferences-csv": ("import-preferences", "prefs.csv", csv_files() | any_bytes),
    "preferences-parquet": ("import-preferences", "prefs.parquet", parquet_files()),
}


@pytest.mark.parametrize(("command", "name", "files"), IMPORTS.values(), ids=IMPORTS.keys())
@EXAMPLES
@given(data=st.data())
def test_an_import_of_any_file_exits_0_or_2(cli, command, name, files, data) -> None:
    cli(command, name, data.draw(files, label="file"))


@EXAMPLES
@given(
    suffix=st.sampled_from([".jsonl", ".csv", ".txt"]),
    content=st.one_of(jsonl_files(), csv_files(), any_bytes),
)
def test_demonstration_files(tmp_path_factory, suffix: str, content: bytes) -> None:
    path = Path(tmp_path_factory.getbasetemp()) / f"demos{suffix}"
    path.write_bytes(content)
    try:
        assert isinstance(read_demonstrations(path), Dataset)
    except UserError as error:
        assert str(error).strip() and "\n" not in str(error)


@pytest.mark.parametrize("reader", ["prompts", "demonstrations"])
def test_a_header_cell_with_a_line_break_is_named_on_one_line(tmp_path, reader) -> None:
    """A quoted header cell may hold a line break; the message that lists the columns
    found stays one line (the break shown escaped)."""
    from rlhf_train.prompts.sources import read_prompt_file

    path = tmp_path / "file.csv"
    path.write_text('"first\nsecond",other\nx,y\n', encoding="utf-8")
    read = read_prompt_file if reader == "prompts" else read_demonstrations
    with pytest.raises(UserError) as raised:
        read(path)
    message = str(raised.value)
    assert "\n" not in message
    assert "'first\\nsecond', other" in message
