"""Prompt files, built-in prompts and deduplicated storage."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.engine import transaction
from db.models import Prompt
from db.prompts import add_prompts, content_hash, count_prompts
from rlhf_train.errors import UserError
from rlhf_train.prompts.sources import (
    builtin_prompts,
    read_prompt_file,
    review_opening,
)
from rlhf_train.prompts.split import split_by_hash


def test_txt_one_prompt_per_line_blank_lines_ignored(tmp_path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\n  second prompt  \nfirst prompt\n", encoding="utf-8")
    assert read_prompt_file(path) == ["first prompt", "second prompt", "first prompt"]


def test_csv_prompt_column(tmp_path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('id,prompt\n1,"Hello, world"\n2,Another\n', encoding="utf-8")
    assert read_prompt_file(path) == ["Hello, world", "Another"]


def test_csv_saved_by_a_spreadsheet_keeps_line_breaks_inside_cells(tmp_path) -> None:
    # line ends read as a plain line feed everywhere.
    # line ends read as "\\n" everywhere.
    path = tmp_path / "p.csv"
    rows = 'id, prompt \r\n1,"Write a poem.\r\nTwo stanzas."\r\n2,"Line\nbreak"\r\n3,Plain\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + rows.encode("utf-8"))
    assert read_prompt_file(path) == ["Write a poem.\nTwo stanzas.", "Line\nbreak", "Plain"]


def test_jsonl_prompt_key(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(json.dumps({"prompt": p, "other": 1}) for p in ["a", "b <script>"]) + "\n"
    )
    assert read_prompt_file(path) == ["a", "b <script>"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.txt", "\n\n", "holds no prompts"),
        ("p.csv", "text,label\nhello,1\n", "has no 'prompt' column (columns found: text, label)"),
        ("p.csv", 'prompt\nhello\n""\n', "row 3 has an empty prompt"),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": \n', "line 2 is not valid JSON"),
        ("p.jsonl", '{"prompt": "ok"}\n{"text": "x"}\n', "line 2 has no string 'prompt' key"),
        ("p.json", "[]", "prompt files must be .txt"),
    ],
)
def test_malformed_prompt_files(tmp_path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_prompt_file(path)
    assert expected in str(caught.value)


def test_non_utf8_and_missing_files(tmp_path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8"):
        read_prompt_file(latin)
    with pytest.raises(UserError, match="There is no file"):
        read_prompt_file(tmp_path / "missing.txt")


def test_builtin_prompts_are_review_openings_and_reproducible() -> None:
    first = builtin_prompts("imdb", 50, 6, seed=3)
    assert first == builtin_prompts("imdb", 50, 6, seed=3)
    assert first != builtin_prompts("imdb", 50, 6, seed=4)
    assert len(first) == len(set(first)) == 50
    assert all(len(p.split()) == 6 and "<br" not in p for p in first)
    rotten = builtin_prompts("rotten_tomatoes", 20, 4, seed=0)
    assert len(rotten) == 20 and not set(rotten) & set(first)


def test_review_opening_strips_html_breaks() -> None:
    assert review_opening("One<br /><br />two three four", 3) == "One two three"


def test_unknown_builtin_set() -> None:
    with pytest.raises(UserError, match="Unknown built-in prompt set 'yelp'"):
        builtin_prompts("yelp", 5, 5, 0)


def test_split_is_a_stable_function_of_content() -> None:
    split_of = split_by_hash(0.25)
    hashes = [content_hash(f"prompt {i}") for i in range(2000)]
    held_out = [h for h in hashes if split_of(h) == "eval"]
    assert 0.2 < len(held_out) / len(hashes) < 0.3
    assert all(split_by_hash(0.25)(h) == "eval" for h in held_out)
    assert {split_by_hash(0.0)(h) for h in hashes} == {"train"}


def test_storage_deduplicates_by_content_hash(workspace) -> None:
    with transaction(workspace.sessions) as session:
        first = add_prompts(session, ["a", "b", "a", "c"], source="t", chat=False)
    assert (first.added, first.duplicates_in_input, first.already_present) == (3, 1, 0)
    with transaction(workspace.sessions) as session:
        second = add_prompts(session, ["c", "d", "d"], source="t", chat=True)
        assert (second.added, second.duplicates_in_input, second.already_present) == (1, 1, 1)
        assert count_prompts(session) == 4


def test_nul_characters_are_dropped_before_storage(workspace) -> None:
    with transaction(workspace.sessions) as session:
        result = add_prompts(session, ["bad\x00prompt", "badprompt"], source="t", chat=False)
        assert (result.added, result.duplicates_in_input) == (1, 1)
    with workspace.sessions() as session:
        assert session.scalars(select(Prompt.text)).all() == ["badprompt"]
