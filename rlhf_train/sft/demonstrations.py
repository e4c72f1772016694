"""Demonstrations for supervised fine-tuning: the user's files and the packaged reviews.

A demonstration has one of the three shapes TRL's SFTTrainer knows: plain `text` (every
token is trained on), `prompt` + `completion` (only the completion is trained on), or,
in .jsonl files, chat `messages` (rendered with the policy's chat template). A file uses
one shape throughout, read from its columns, so a typo in one row is an error rather
than a second kind of training example.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlhf_train.errors import UserError
from rlhf_train.prompts.sources import (
    clean_review,
    json_lines,
    open_csv,
    packaged_reviews,
    read_text_file,
)

TEXT = "text"
PROMPT_COMPLETION = "prompt-completion"
CONVERSATIONAL = "conversational"
DEMONSTRATION_SUFFIXES = (".txt", ".csv", ".jsonl")
BUILTIN_DEMONSTRATION_SETS = ("imdb", "rotten_tomatoes")

_JSON_EXAMPLES = {
    TEXT: '{"text": "..."}',
    PROMPT_COMPLETION: '{"prompt": "...", "completion": "..."}',
    CONVERSATIONAL: '{"messages": [{"role": "user", "content": "..."}, '
    '{"role": "assistant", "content": "..."}]}',
}


def _format_of(keys: Iterable[str]) -> str | None:
    """The shape that a row's keys (or a file's columns) announce, if any."""
    present = set(keys)
    if "messages" in present:
        return CONVERSATIONAL
    if "prompt" in present or "completion" in present:
        return PROMPT_COMPLETION
    if "text" in present:
        return TEXT
    return None


def demonstration_format(dataset: Dataset) -> str:
    """TEXT, PROMPT_COMPLETION or CONVERSATIONAL, from the dataset's columns."""
    found = _format_of(dataset.column_names)
    if found is None:
        raise ValueError(f"not a demonstrations dataset: columns {dataset.column_names}")
    return found


def _required_text(record: Mapping[str, Any], key: str, where: str, fix: str, item: str) -> str:
    """record[key], a string with more than whitespace; `item` is what the user may delete."""
    value = record.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where} has no string {key!r}; {fix}.")
    if not value.strip():
        raise UserError(f"{where} has an empty {key}; fill it in or remove the {item}.")
    return value


def _messages(record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    fix = f"write objects like {_JSON_EXAMPLES[CONVERSATIONAL]}"
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where} has 'messages' that is not a non-empty list; {fix}.")
    cleaned = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise UserError(f"{where} message {number} is not an object; {fix}.")
        place = f"{where} message {number}"
        role = _required_text(message, "role", place, fix, "message")
        content = _required_text(message, "content", place, fix, "message")
        # Only role and content: extra keys would give Arrow rows of different types.
        cleaned.append({"role": role.strip(), "content": content})
    if not any(message["role"] == "assistant" for message in cleaned):
        raise UserError(
            f"{where} has no message with the role 'assistant', so there is nothing to learn "
            "from it; add the assistant's reply or remove the line."
        )
    return cleaned


def _row(shape: str, record: Mapping[str, Any], where: str, fix: str, item: str) -> dict[str, Any]:
    if shape == CONVERSATIONAL:
        return {"messages": _messages(record, where)}
    if shape == PROMPT_COMPLETION:
        # Whitespace is kept: where the prompt ends and the completion starts matters.
        return {
            "prompt": _required_text(record, "prompt", where, fix, item),
            "completion": _required_text(record, "completion", where, fix, item),
        }
    return {"text": _required_text(record, "text", where, fix, item).strip()}


def _from_txt(path: Path) -> tuple[str, list[dict[str, Any]]]:
    lines = read_text_file(path).splitlines()
    return TEXT, [{"text": line.strip()} for line in lines if line.strip()]


def _from_jsonl(path: Path) -> tuple[str, list[dict[str, Any]]]:
    shape: str | None = None
    first_line = 0
    rows = []
    for line_number, record in json_lines(path):
        where = f"{path} line {line_number}"
        found = _format_of(record) if isinstance(record, dict) else None
        if found is None:
            raise UserError(
                f"{where} is not an object with a 'text', 'prompt' and 'completion', or "
                f"'messages' key; write objects like {_JSON_EXAMPLES[TEXT]}."
            )
        if shape is None:
            shape, first_line = found, line_number
        elif found != shape:
            raise UserError(
                f"{where} is a {found} demonstration but line {first_line} is {shape}; use one "
                "format for the whole file."
            )
        fix = f"write objects like {_JSON_EXAMPLES[shape]}"
        rows.append(_row(shape, record, where, fix, "line"))
    return shape or TEXT, rows


def _from_csv(path: Path) -> tuple[str, list[dict[str, Any]]]:
    reader = open_csv(path)
    columns = reader.fieldnames
    shape = _format_of(name for name in columns if name != "messages")
    if shape is None:
        if "messages" in columns:
            raise UserError(
                f"{path} has a 'messages' column, but chat demonstrations need a .jsonl file; "
                f"write one object per line like {_JSON_EXAMPLES[CONVERSATIONAL]}."
            )
        raise UserError(
            f"{path} has neither a 'text' column nor 'prompt' and 'completion' columns "
            f"(columns found: {reader.shown_columns()}); add a header row naming them."
        )
    if shape == PROMPT_COMPLETION and not {"prompt", "completion"} <= set(columns):
        missing = "completion" if "prompt" in columns else "prompt"
        raise UserError(
            f"{path} has no {missing!r} column; prompt-completion demonstrations need both a "
            "prompt and a completion column (or use a single text column)."
        )
    fix = f"fill in the {shape} columns"
    # Row 1 is the header, as a spreadsheet numbers it.
    return shape, [
        # A short row leaves its last cells None: that is an empty cell too.
        _row(shape, {k: v or "" for k, v in row.items()}, f"{path} row {n}", fix, "row")
        for n, row in enumerate(reader, start=2)
    ]


_READERS: dict[str, Callable[[Path], tuple[str, list[dict[str, Any]]]]] = {
    ".txt": _from_txt,
    ".csv": _from_csv,
    ".jsonl": _from_jsonl,
}


def read_demonstrations(path: Path | str) -> Dataset:
    """The demonstrations in `path` as a Dataset with the columns of their shape."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"There is no file {path}; check the path.")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise UserError(
            f"{path} has the suffix {suffix or '(none)'}; demonstration files must be .txt (one "
            "per line), .csv (a text column, or prompt and completion columns) or .jsonl (text, "
            "prompt and completion, or messages keys)."
        )
    shape, rows = _READERS[suffix](path)
    if not rows:
        raise UserError(f"{path} holds no demonstrations; add at least one.")
    columns = {TEXT: ["text"], PROMPT_COMPLETION: ["prompt", "completion"]}.get(shape, ["messages"])
    return Dataset.from_dict({column: [row[column] for row in rows] for column in columns})


def builtin_demonstrations(name: str, n: int, seed: int) -> Dataset:
    """`n` whole reviews from the packaged IMDB or Rotten Tomatoes set, as `text`.

    Reviews are chosen by a seeded shuffle, so the same arguments give the same texts.
    """
    if name not in BUILTIN_DEMONSTRATION_SETS:
        raise UserError(
            f"Unknown built-in demonstration set {name!r}; use one of: "
            f"{', '.join(BUILTIN_DEMONSTRATION_SETS)}."
        )
    reviews = packaged_reviews(name)
    random.Random(seed).shuffle(reviews)
    texts: list[str] = []
    seen: set[str] = set()
    for review in reviews:
        text = clean_review(review)
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            if len(texts) == n:
                break
    return Dataset.from_dict({"text": texts})


def split_held_out(
    dataset: Dataset, fraction: float, seed: int, source: str
) -> tuple[Dataset, Dataset]:
    """(train, held out): a seeded share `fraction` held out, at least one example each."""
    total = len(dataset)
    if total < 2:
        raise UserError(
            f"{source} holds {total} demonstration(s), but fine-tuning needs at least 2 (one to "
            "train on and one held out for the eval loss); add more."
        )
    held_out = min(max(1, round(total * fraction)), total - 1)
    parts = dataset.train_test_split(test_size=held_out, seed=seed)
    return parts["train"], parts["test"]
