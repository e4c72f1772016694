"""Conversations as prompts: import from JSONL (good and hostile files, one row per
conversation), the schema upgrade, generation through the chat template, export
--conversational, and import-preferences keeping a multi-turn prompt whole."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select

from db.conversations import (
    MAX_CHARACTERS,
    MAX_MESSAGES,
    ROLES,
    check_messages,
    conversation_hash,
    conversation_text,
    plain_text_prompt,
)
from db.engine import make_engine
from db.errors import UserError
from db.models import Pair, Prompt, Sample
from db.prompts import content_hash
from migrations.runner import upgrade
from rlhf_train.cli import main
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.models.sampling import PromptInput, encode_prompt
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts
from tests.tiny_models import build_tiny_policy

Run = Callable[..., tuple[int, str, str]]

SYSTEM = {"role": "system", "content": "You are a film critic."}
HISTORY = [
    SYSTEM,
    {"role": "user", "content": "Name a film about a whale."},
    {"role": "assistant", "content": "Moby Dick (1956)."},
    {"role": "user", "content": "Was it any good?"},
]


def _row_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        counts = {
            table: connection.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar()
            for table in inspect(connection).get_table_names()
            if table != "alembic_version"
        }
    engine.dispose()
    return counts


@pytest.fixture
def run(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> Iterator[Run]:
    """`rlhf --workspace WS ARGS...` in-process on an initialized workspace on `db_url`."""
    monkeypatch.setenv("RLHF_DB_URL", db_url)
    workspace = tmp_path / "ws"

    def invoke(*args: str) -> tuple[int, str, str]:
        code = main(["--workspace", str(workspace), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert invoke("init")[0] == 0
    invoke.counts = lambda: _row_counts(db_url)
    invoke.url = db_url
    yield invoke


def _prompts(url: str) -> list[Prompt]:
    engine = make_engine(url)
    from db.engine import session_factory

    with session_factory(engine)() as session:
        rows = list(session.scalars(select(Prompt).order_by(Prompt.id)))
        session.expunge_all()
    engine.dispose()
    return rows


def _jsonl(tmp_path: Path, name: str, records: list[object]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# ---- import --------------------------------------------------------------------------


def test_import_stores_each_conversation_once(run: Run, tmp_path: Path) -> None:
    reordered = [{"content": m["content"], "role": m["role"]} for m in HISTORY]
    first = _jsonl(
        tmp_path,
        "chats.jsonl",
        [
            {"messages": HISTORY},
            {"messages": reordered},  # the same conversation, keys in another order
            {"prompt": "A plain prompt"},
            {"messages": [{"role": "user", "content": "Just a question"}]},
        ],
    )
    code, out, err = run("prompts", "import", first)
    assert code == 0, err
    assert "Imported 3 prompts" in out and "skipped 1 duplicates within the input" in out
    # A second file: the conversation again, its rendering as a plain text, and the
    # single question as a plain chat prompt.
    second = _jsonl(
        tmp_path,
        "again.jsonl",
        [{"messages": HISTORY}, {"prompt": conversation_text(HISTORY)}],
    )
    code, out, err = run("prompts", "import", second)
    assert code == 0 and "Imported 1 prompts" in out and "1 already stored" in out, err
    (tmp_path / "q.txt").write_text("Just a question\n", encoding="utf-8")
    code, out, _ = run("prompts", "import", str(tmp_path / "q.txt"), "--chat")
    assert "Imported 0 prompts" in out and "1 already stored" in out

    stored = {p.content_hash: p for p in _prompts(run.url)}
    conversation = stored[conversation_hash(HISTORY)]
    assert conversation.messages == HISTORY and conversation.chat
    assert conversation.text == conversation_text(HISTORY)
    assert conversation.text.startswith("System: You are a film critic.\n\nUser: Name a film")
    # Its rendering imported as text is another prompt: the hashes never collide.
    rendering = stored[content_hash(conversation_text(HISTORY))]
    assert rendering.messages is None and rendering.text == conversation.text
    single = stored[content_hash("Just a question")]
    assert single.messages is None and single.chat and single.text == "Just a question"
    assert len(stored) == 4
    engine = make_engine(run.url)
    with engine.connect() as connection:
        # Plain prompts hold SQL NULL (not JSON null), as rows from before 0008 do.
        plain = "SELECT count(*) FROM prompts WHERE messages IS NULL"
        assert connection.exec_driver_sql(plain).scalar() == 3
    engine.dispose()


_EXAMPLE = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ("hello", "line 2 has 'messages' that is not a non-empty list"),
        ([], "line 2 has 'messages' that is not a non-empty list"),
        (["hello"], "line 2 message 1 is not an object with the keys role and content"),
        ([{"role": "user"}], "line 2 message 1 is not an object with the keys role and content"),
        ([{"role": "user", "content": 3}], "line 2 message 1 (user) has no text content"),
        ([{"role": "user", "content": "  \x00 "}], "message 1 (user) has no text content"),
        ([{"role": "tool", "content": "x"}], "line 2 message 1 has the role 'tool'; use system"),
        (
            [{"role": "r" * 10_000, "content": "x"}],
            "has the role 'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...;",
        ),
        ([{"role": "system", "content": "s"}], "line 2 has only a system message"),
        (
            [*_EXAMPLE, {"role": "assistant", "content": "a"}],
            "line 2 ends with an assistant turn; end it with the user turn",
        ),
        (
            [*_EXAMPLE, {"role": "system", "content": "s"}, *_EXAMPLE],
            "line 2 message 2 is a second system message or one after the first turn",
        ),
        ([*_EXAMPLE, *_EXAMPLE], "line 2 message 2 is a user turn where an assistant turn belongs"),
        (
            [{"role": "assistant", "content": "a"}, *_EXAMPLE],
            "line 2 message 1 is an assistant turn where a user turn belongs",
        ),
        (
            [*_EXAMPLE, {"role": "assistant", "content": "a"}] * (MAX_MESSAGES // 2) + _EXAMPLE,
            f"more than the {MAX_MESSAGES} a conversation may hold",
        ),
        (
            [{"role": "user", "content": "x" * (MAX_CHARACTERS + 1)}],
            f"characters of messages, more than {MAX_CHARACTERS}",
        ),
    ],
)
def test_hostile_conversation_files_store_nothing(
    run: Run, tmp_path: Path, messages: object, expected: str
) -> None:
    # A good line first: one bad line leaves it unstored too (one transaction).
    path = _jsonl(tmp_path, "bad.jsonl", [{"messages": HISTORY}, {"messages": messages}])
    before = run.counts()
    code, _out, err = run("prompts", "import", path)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert run.counts() == before


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from([*ROLES, "tool"]) | _JSON, "content": st.text(max_size=5) | _JSON}
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_MESSAGE, max_size=6) | _JSON)
def test_any_messages_value_is_a_conversation_or_one_sentence(value: object) -> None:
    """Whatever a line's 'messages' holds: a valid conversation comes back (roles in
    order, ending with user), or a UserError; never another exception."""
    try:
        messages = check_messages(value, "f.jsonl line 1")
    except UserError as error:
        assert str(error).startswith("f.jsonl line 1") and str(error).count(";") >= 1
        return
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    assert body and body == ["user", "assistant"] * (len(body) // 2) + ["user"]
    assert all(m["content"].strip() for m in messages)


def test_a_line_with_both_prompt_and_messages_is_refused(run: Run, tmp_path: Path) -> None:
    path = _jsonl(tmp_path, "both.jsonl", [{"prompt": "p", "messages": HISTORY}])
    code, _out, err = run("prompts", "import", path)
    assert code == 2 and "line 1 has both 'prompt' and 'messages'; keep one" in err


# ---- the schema upgrade --------------------------------------------------------------


def test_upgrade_from_0007_keeps_prompts_and_adds_conversations(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0007")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO prompts (text, source, content_hash, split, chat, created_at) "
            "VALUES ('old prompt', 't', 'h1', 'train', false, '2026-01-01'), "
            "('old chat prompt', 't', 'h2', 'eval', true, '2026-01-01')"
        )
    upgrade(engine)
    from db.engine import session_factory, transaction
    from db.prompts import add_prompts

    with transaction(session_factory(engine)) as session:
        rows = list(session.scalars(select(Prompt).order_by(Prompt.id)))
        assert [(p.text, p.split, p.chat, p.messages) for p in rows] == [
            ("old prompt", "train", False, None),
            ("old chat prompt", "eval", True, None),
        ]
        assert add_prompts(session, [HISTORY], source="t", chat=False).added == 1
    with session_factory(engine)() as session:
        stored = session.scalar(select(Prompt).where(Prompt.messages.is_not(None)))
        assert stored is not None and stored.messages == HISTORY
    engine.dispose()


# ---- generation ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_without_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("no-template"), chat_template=False)


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def test_the_chat_template_gets_the_whole_conversation(tiny_policy: Path) -> None:
    tokenizer = _tokenizer(tiny_policy)
    prompt = PromptInput(conversation_text(HISTORY), True, HISTORY)
    ids, templated = encode_prompt(tokenizer, prompt)
    expected = tokenizer.apply_chat_template(HISTORY, add_generation_prompt=True, tokenize=False)
    assert templated and tokenizer.decode(ids) == expected
    # Every turn is in it, and the assistant's turn is opened last.
    assert "You are a film critic." in expected and "Moby Dick (1956)." in expected
    assert expected.endswith("Was it any good?<|im_end|>\n<|im_start|>assistant\n")


def test_without_a_chat_template_a_conversation_is_its_rendering(
    policy_without_template: Path,
) -> None:
    tokenizer = _tokenizer(policy_without_template)
    ids, templated = encode_prompt(tokenizer, PromptInput("ignored", True, HISTORY))
    assert not templated
    assert tokenizer.decode(ids, skip_special_tokens=True) == plain_text_prompt(HISTORY)
    assert plain_text_prompt(HISTORY).endswith("User: Was it any good?\n\nAssistant:")


def test_a_round_generates_from_conversations(workspace, tiny_policy: Path) -> None:
    store_prompts(workspace, [HISTORY, "A plain prompt"])
    report = generate_round(workspace, round_request(tiny_policy, n_prompts=2), False)
    assert report.samples == 4
    with workspace.sessions() as session:
        by_prompt = {
            prompt.text: [s.decoding["chat_template"] for s in samples]
            for prompt in session.scalars(select(Prompt))
            for samples in [
                list(session.scalars(select(Sample).where(Sample.prompt_id == prompt.id)))
            ]
        }
    assert by_prompt[conversation_text(HISTORY)] == [True, True]
    assert by_prompt["A plain prompt"] == [False, False]


# ---- export and import-preferences ---------------------------------------------------


def _voted_round(workspace, policy: Path) -> None:
    store_prompts(workspace, [HISTORY, "A plain prompt"])
    generate_round(workspace, round_request(policy, n_prompts=2), False)
    record_votes(workspace, {0: [("ann", "A", 2)], 1: [("ann", "B", 1)]})


def _conversational_export(workspace, policy: Path, out: Path) -> Path:
    """A voted round of a conversation and a plain prompt, exported with --conversational."""
    _voted_round(workspace, policy)
    export_preferences(workspace, ExportOptions(out=out, conversational=True, test_fraction=0.0))
    return out


def test_export_conversational_writes_the_whole_conversation(
    sqlite_workspace, tiny_policy: Path, tmp_path: Path
) -> None:
    from datasets import load_from_disk
    from trl.data_utils import apply_chat_template, is_conversational

    out = _conversational_export(sqlite_workspace, tiny_policy, tmp_path / "chat")
    rows = load_from_disk(str(out / "hf"))["train"].to_list()
    prompts = sorted((row["prompt"] for row in rows), key=len)
    assert prompts == [[{"role": "user", "content": "A plain prompt"}], HISTORY]
    tokenizer = _tokenizer(tiny_policy)
    for row in rows:
        assert is_conversational(row)
        assert len(row["chosen"]) == 1 and row["chosen"][0]["role"] == "assistant"
        formatted = apply_chat_template(row, tokenizer)
        assert formatted["prompt"].endswith("<|im_start|>assistant\n")
        assert formatted["chosen"] and formatted["rejected"]
    # Without the flag the prompt is the readable rendering.
    plain = tmp_path / "plain"
    export_preferences(sqlite_workspace, ExportOptions(out=plain, test_fraction=0.0))
    texts = {row["prompt"] for row in load_from_disk(str(plain / "hf"))["train"].to_list()}
    assert texts == {"A plain prompt", conversation_text(HISTORY)}


def test_dpo_trains_on_a_conversational_export(
    sqlite_workspace, tiny_policy: Path, tmp_path: Path
) -> None:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    out = _conversational_export(sqlite_workspace, tiny_policy, tmp_path / "chat")
    tokenizer = _tokenizer(tiny_policy)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_policy),
        args=DPOConfig(
            output_dir=str(tmp_path / "dpo"),
            max_length=128,
            per_device_train_batch_size=2,
            max_steps=2,
            report_to="none",
            use_cpu=True,
            bf16=False,
            save_strategy="no",
            dataloader_num_workers=0,
        ),
        train_dataset=load_from_disk(str(out / "hf"))["train"],
        processing_class=tokenizer,
    )
    assert trainer.train().global_step == 2


def test_import_preferences_keeps_a_conversation_whole(run: Run, tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        "prefs.jsonl",
        [
            {
                "prompt": HISTORY,
                "chosen": [{"role": "assistant", "content": "A classic."}],
                "rejected": [{"role": "assistant", "content": "No."}],
            },
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": "Hello!",
                "rejected": "Go away.",
            },
        ],
    )
    code, out, err = run("import-preferences", path)
    assert code == 0 and "Imported 2 preference pairs" in out, err
    stored = {p.content_hash: p for p in _prompts(run.url)}
    assert stored[conversation_hash(HISTORY)].messages == HISTORY
    assert stored[content_hash("Hi")].messages is None
    engine = make_engine(run.url)
    with engine.connect() as connection:
        texts = {
            text
            for (text,) in connection.execute(
                select(Sample.text).join(Pair, Pair.sample_a_id == Sample.id)
            )
        }
    engine.dispose()
    assert texts == {"A classic.", "Hello!"}


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (
            "chosen",
            [{"role": "user", "content": "I am not an answer"}],
            "line 2 column 'chosen' holds 'user' where one assistant message belongs",
        ),
        (
            "rejected",
            [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
            "line 2 column 'rejected' holds 'assistant', 'user' where one assistant message",
        ),
        (
            "prompt",
            [*HISTORY, {"role": "assistant", "content": "answered already"}],
            "line 2 column 'prompt' ends with an assistant turn",
        ),
        (
            "prompt",
            [{"role": "narrator", "content": "x"}],
            "line 2 column 'prompt' message 1 has the role 'narrator'",
        ),
    ],
)
def test_import_preferences_checks_roles(
    run: Run, tmp_path: Path, column: str, value: object, expected: str
) -> None:
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = _jsonl(tmp_path, "prefs.jsonl", [good, {**good, column: value}])
    before = run.counts()
    code, _out, err = run("import-preferences", path)
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert run.counts() == before


def test_conversational_export_imports_back_as_the_same_prompts(
    sqlite_workspace, tiny_policy: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = _conversational_export(sqlite_workspace, tiny_policy, tmp_path / "chat")
    with sqlite_workspace.sessions() as session:
        before = {p.content_hash for p in session.scalars(select(Prompt))}
    monkeypatch.setattr(sys, "argv", ["rlhf"])
    code = main(["--workspace", str(sqlite_workspace.root), "import-preferences", str(out / "hf")])
    assert code == 0, capsys.readouterr().err
    with sqlite_workspace.sessions() as session:
        after = {p.content_hash for p in session.scalars(select(Prompt))}
    assert after == before  # both prompts found again by hash: no new prompt rows


def test_optimizers_and_evaluation_get_the_conversation(sqlite_workspace, tmp_path: Path) -> None:
    """PPO, RLOO/GRPO and evaluation read prompts through these: a conversation arrives
    with its messages, from the workspace and from a --prompts file alike."""
    from rlhf_train.evaluation.report import held_out_prompts
    from rlhf_train.policy.prompts import load_policy_prompts

    store_prompts(sqlite_workspace, [HISTORY])
    (from_workspace,) = load_policy_prompts(sqlite_workspace, None)
    assert from_workspace == PromptInput(conversation_text(HISTORY), True, HISTORY)
    (held_out,), _split = held_out_prompts(sqlite_workspace, 5)
    assert held_out == from_workspace
    path = _jsonl(
        tmp_path, "p.jsonl", [{"messages": HISTORY}, {"messages": [HISTORY[1]]}, {"prompt": "x"}]
    )
    assert load_policy_prompts(sqlite_workspace, path) == [
        from_workspace,
        PromptInput(HISTORY[1]["content"], True),
        PromptInput("x", False),
    ]


def test_raw_export_conversational_writes_the_whole_conversation(
    sqlite_workspace, tiny_policy: Path, tmp_path: Path
) -> None:
    from rlhf_train.export.raw import RawExportOptions, export_raw

    _voted_round(sqlite_workspace, tiny_policy)
    out = tmp_path / "votes"
    export_raw(sqlite_workspace, RawExportOptions(out=out, conversational=True, formats=("jsonl",)))
    rows = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert sorted((row["prompt"] for row in rows), key=len) == [
        [{"role": "user", "content": "A plain prompt"}],
        HISTORY,
    ]
    assert all(row["response_a"][0]["role"] == "assistant" for row in rows)
