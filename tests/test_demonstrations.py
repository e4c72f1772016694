"""Reading demonstrations: the three shapes in each file type, and every bad input's message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_train.errors import UserError
from rlhf_train.sft.demonstrations import (
    CONVERSATIONAL,
    PROMPT_COMPLETION,
    TEXT,
    builtin_demonstrations,
    demonstration_format,
    read_demonstrations,
    split_held_out,
)
from tests.helpers import write_file

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


_write = write_file


def _jsonl(tmp_path: Path, records: list[object], name: str = "demos.jsonl") -> Path:
    return _write(tmp_path, name, "\n".join(json.dumps(r) for r in records) + "\n")


def _fails(path: Path, *fragments: str) -> str:
    with pytest.raises(UserError) as caught:
        read_demonstrations(path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    # One sentence: a cause and a fix, ending in a full stop.
    assert message.endswith(".") and "\n" not in message
    return message


def test_txt_is_one_text_per_non_empty_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "demos.txt", "  A good film. \n\n\nA bad film.\n")
    dataset = read_demonstrations(path)
    assert dataset.column_names == ["text"]
    assert dataset["text"] == ["A good film.", "A bad film."]
    assert demonstration_format(dataset) == TEXT


def test_jsonl_text_prompt_completion_and_messages(tmp_path: Path) -> None:
    text = read_demonstrations(_jsonl(tmp_path, [{"text": "One."}, {"text": "Two.", "x": 1}]))
    assert text["text"] == ["One.", "Two."] and demonstration_format(text) == TEXT

    pairs = [{"prompt": "Q: 2+2?", "completion": " 4"}, {"prompt": "Q: 3+3?", "completion": " 6"}]
    completions = read_demonstrations(_jsonl(tmp_path, pairs, "pc.jsonl"))
    assert demonstration_format(completions) == PROMPT_COMPLETION
    # The leading space belongs to the completion: it is where the answer starts.
    assert completions["completion"] == [" 4", " 6"]

    chats = [{"messages": CHAT}, {"messages": [{"role": "system", "content": "Be kind."}, *CHAT]}]
    conversations = read_demonstrations(_jsonl(tmp_path, chats, "chat.jsonl"))
    assert demonstration_format(conversations) == CONVERSATIONAL
    assert conversations[1]["messages"][0] == {"role": "system", "content": "Be kind."}


def test_csv_text_and_prompt_completion_with_multiline_cells(tmp_path: Path) -> None:
    text = read_demonstrations(_write(tmp_path, "t.csv", "\ufefftext,source\nOne.,a\nTwo.,b\n"))
    assert text["text"] == ["One.", "Two."]
    path = _write(tmp_path, "pc.csv", 'prompt,completion\nWrite a poem:,"Roses\nare red"\n')
    completions = read_demonstrations(path)
    assert completions["completion"] == ["Roses\nare red"]
    assert demonstration_format(completions) == PROMPT_COMPLETION


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        ("demos.json", "[]", ["demos.json", "suffix .json", ".txt", ".csv", ".jsonl"]),
        ("demos", "text", ["suffix (none)"]),
        ("demos.txt", b"caf\xe9\n", ["demos.txt", "not UTF-8", "byte 3", "save it as UTF-8"]),
        ("demos.txt", "\n  \n", ["demos.txt", "holds no demonstrations", "add at least one"]),
        ("demos.jsonl", "", ["holds no demonstrations"]),
        ("demos.csv", "text\n", ["holds no demonstrations"]),
        ("demos.jsonl", '{"text": "a"}\n{"text": \n', ["line 2", "not valid JSON", "one JSON"]),
        ("demos.jsonl", '["a"]\n', ["line 1", "not an object", '{"text": "..."}']),
        ("demos.jsonl", '{"body": "a"}\n', ["line 1", "'text'", "'messages'"]),
        ("demos.jsonl", '{"text": 3}\n', ["line 1", "no string 'text'", '{"text": "..."}']),
        (
            "demos.jsonl",
            '{"text": "  "}\n',
            ["line 1", "empty text", "fill it in or remove the line"],
        ),
        (
            "demos.jsonl",
            '{"text": "a"}\n\n{"prompt": "b", "completion": "c"}\n',
            ["line 3", "prompt-completion", "line 1 is text", "one format"],
        ),
        ("demos.jsonl", '{"prompt": "a"}\n', ["line 1", "no string 'completion'"]),
        ("demos.jsonl", '{"prompt": "a", "completion": ""}\n', ["line 1", "empty completion"]),
        ("demos.jsonl", '{"messages": []}\n', ["line 1", "non-empty list", "role"]),
        ("demos.jsonl", '{"messages": ["hi"]}\n', ["line 1 message 1", "not an object"]),
        (
            "demos.jsonl",
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}\n',
            ["line 1 message 2", "no string 'content'"],
        ),
        (
            "demos.jsonl",
            '{"messages": [{"role": "user", "content": " "}, {"role": "assistant"}]}\n',
            ["line 1 message 1", "empty content", "remove the message"],
        ),
        (
            "demos.jsonl",
            '{"messages": [{"role": "user", "content": "a"}]}\n',
            ["line 1", "no message with the role 'assistant'", "add the assistant's reply"],
        ),
        (
            "demos.csv",
            "body\nx\n",
            ["neither a 'text' column", "columns found: body", "header row"],
        ),
        ("demos.csv", "", ["columns found: none"]),
        ("demos.csv", "messages\n[]\n", ["'messages' column", "need a .jsonl file"]),
        ("demos.csv", "prompt,text\na,b\n", ["no 'completion' column", "both a prompt"]),
        ("demos.csv", "completion\na\n", ["no 'prompt' column"]),
        ("demos.csv", "text,n\nfine,1\n ,2\n", ["row 3", "empty text", "remove the row"]),
        ("demos.csv", "prompt,completion\na,b\nc\n", ["row 3", "empty completion"]),
    ],
)
def test_bad_files_are_one_sentence_naming_file_place_and_fix(
    tmp_path: Path, name: str, content: str | bytes, fragments: list[str]
) -> None:
    _fails(_write(tmp_path, name, content), *fragments)


def test_missing_file(tmp_path: Path) -> None:
    _fails(tmp_path / "nope.txt", "There is no file", "nope.txt", "check the path")


def test_builtin_reviews_are_clean_seeded_samples() -> None:
    first = builtin_demonstrations("imdb", 20, seed=3)
    assert first.column_names == ["text"] and len(first) == 20
    assert first["text"] == builtin_demonstrations("imdb", 20, seed=3)["text"]
    assert first["text"] != builtin_demonstrations("imdb", 20, seed=4)["text"]
    assert len(set(first["text"])) == 20
    for text in first["text"]:
        assert "<br" not in text.lower() and "  " not in text and text == text.strip()
    assert len(builtin_demonstrations("rotten_tomatoes", 5, seed=0)) == 5
    with pytest.raises(UserError, match="Unknown built-in demonstration set 'yelp'.*imdb"):
        builtin_demonstrations("yelp", 5, seed=0)


def test_held_out_split_keeps_one_on_each_side() -> None:
    from datasets import Dataset

    dataset = Dataset.from_dict({"text": [f"t{i}" for i in range(40)]})
    train, held_out = split_held_out(dataset, 0.1, seed=0, source="x")
    assert (len(train), len(held_out)) == (36, 4)
    again = split_held_out(dataset, 0.1, seed=0, source="x")[1]
    assert held_out["text"] == again["text"]
    assert not set(train["text"]) & set(held_out["text"])
    # Tiny sets and extreme shares still leave one example on each side.
    assert [len(p) for p in split_held_out(dataset.select(range(2)), 0.01, 0, "x")] == [1, 1]
    assert [len(p) for p in split_held_out(dataset.select(range(3)), 0.99, 0, "x")] == [1, 2]
    with pytest.raises(UserError, match="my.txt holds 1 demonstration.*at least 2"):
        split_held_out(dataset.select(range(1)), 0.1, 0, "my.txt")
