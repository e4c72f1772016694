"""`rlhf train reward` and `rlhf evaluate reward`: real RewardTrainer steps on tiny models
built here, on exports made through the real import and export code."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from db.engine import transaction
from db.models import Model, TrainingRun
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.reward.format import FORMAT_FILE
from rlhf_train.reward.scorer import RewardScorer
from rlhf_train.reward.train import RewardOptions, train_reward
from rlhf_train.rounds.import_preferences import PreferenceRow, import_preferences
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace
from tests.tiny_models import build_tiny_bert_backbone, build_tiny_reward_backbone

GOOD = ["great", "wonderful", "loved", "charming", "funny"]
BAD = ["terrible", "boring", "waste", "nonsense", "long"]
SETTINGS = {
    "reward.batch_size": 8,
    "reward.max_length": 32,
    "reward.learning_rate": 3e-3,
    # One thread: a tiny model's matrices are too small to split, and a second thread
    # waiting on a busy core slows every step.
    "runtime.threads": 1,
    "runtime.device": "cpu",
}


def toy_rows(n: int, seed: int = 0) -> list[PreferenceRow]:
    """Pairs a bag-of-words model separates perfectly: praise is chosen over complaints."""
    rng = random.Random(seed)
    return [
        PreferenceRow(
            f"Film {i} was",
            " " + " ".join(rng.choices(GOOD, k=3)),
            " " + " ".join(rng.choices(BAD, k=3)),
        )
        for i in range(n)
    ]


def make_export(workspace: Workspace, out: Path, n: int = 80, test_fraction: float = 0.25) -> Path:
    with transaction(workspace.sessions) as session:
        import_preferences(session, toy_rows(n), "toy")
    export_preferences(workspace, ExportOptions(out=out, test_fraction=test_fraction))
    return out


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("rm-backbone"))


@pytest.fixture
def trainable(tmp_path: Path, db_url: str):
    """An initialized workspace with reward settings sized for tiny models."""
    opened = Workspace.open(tmp_path / "ws", {"database.url": db_url, **SETTINGS})
    init_workspace(opened)
    yield opened
    opened.engine.dispose()


@pytest.fixture
def sqlite_trainable(tmp_path: Path):
    opened = Workspace.open(tmp_path / "ws", SETTINGS)
    init_workspace(opened)
    yield opened
    opened.engine.dispose()


def test_training_separates_a_toy_export_and_registers_the_model(
    trainable, backbone, tmp_path
) -> None:
    export = make_export(trainable, tmp_path / "export")
    result = train_reward(
        trainable, RewardOptions(data=str(export), backbone=str(backbone), max_steps=40)
    )

    assert result.metrics["test_accuracy"] == 1.0
    assert result.metrics["train_steps"] == 40
    with trainable.sessions() as session:
        model = session.scalar(select(Model).where(Model.name == result.name))
        run = session.get(TrainingRun, result.run_id)
        assert model.kind == "reward" and model.path == str(result.path)
        assert model.training_run_id == run.id and run.output_model_id == model.id
        assert run.status == "succeeded" and run.progress == 1.0 and run.kind == "reward"
        assert run.export_id is not None and model.config["export_id"] == run.export_id
        assert model.metrics["test_accuracy"] == 1.0
    saved = json.loads((result.path / "metrics.json").read_text())
    assert saved["test_accuracy"] == 1.0
    report = trainable.root / "reports" / result.name
    assert json.loads((report / "diagnostics.json").read_text())["n_pairs"] > 0
    for plot in ("calibration.png", "reward_distribution.png", "accuracy_by_bucket.png"):
        assert (report / plot).read_bytes().startswith(b"\x89PNG")
    log = [json.loads(line) for line in Path(run.log_path).read_text().splitlines()]
    assert log and "loss" in log[0]


def test_an_untrained_backbone_is_not_already_perfect(sqlite_trainable, backbone, tmp_path):
    """The accuracy of 1.0 above comes from training, not from the toy data."""
    export = make_export(sqlite_trainable, tmp_path / "export")
    from rlhf_train.reward.evaluate import evaluate_reward

    report = evaluate_reward(sqlite_trainable, str(backbone), str(export))
    assert report.diagnostics["accuracy"] < 0.9


@pytest.mark.parametrize("architecture", ["decoder", "encoder"])
def test_saved_model_scores_the_same_with_plain_transformers(
    sqlite_trainable, backbone, tmp_path, architecture
) -> None:
    """The README's recipe for each input format, with transformers alone, gives
    RewardScorer's numbers, including inputs cut at max_length."""
    start = backbone if architecture == "decoder" else build_tiny_bert_backbone(tmp_path / "bert")
    export = make_export(sqlite_trainable, tmp_path / "export")
    result = train_reward(
        sqlite_trainable, RewardOptions(data=str(export), backbone=str(start), max_steps=10)
    )
    prompts = ["Film 1 was", "A long opening line that is longer than the limit " * 3]
    responses = [" great fun", " terrible and boring " * 4]

    recorded = json.loads((result.path / FORMAT_FILE).read_text())
    assert recorded["style"] == {"decoder": "concat", "encoder": "pair"}[architecture]
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    model = AutoModelForSequenceClassification.from_pretrained(result.path).eval()
    limit = recorded["max_length"]

    def plain_inputs(prompt: str, response: str):
        if architecture == "encoder":
            return tokenizer(
                prompt, response, truncation=True, max_length=limit, return_tensors="pt"
            )
        # One text, cut on the left (the saved tokenizer truncates on the left).
        assert tokenizer.truncation_side == "left"
        return tokenizer(prompt + response, truncation=True, max_length=limit, return_tensors="pt")

    with torch.no_grad():
        plain = [
            model(**plain_inputs(p, r)).logits[0, 0].item()
            for p, r in zip(prompts, responses, strict=True)
        ]
    assert len(plain_inputs(prompts[1], responses[1])["input_ids"][0]) == limit
    ours = RewardScorer.load(result.path, batch_size=2).score(prompts, responses)
    assert ours.tolist() == pytest.approx(plain, abs=1e-5)


def test_policy_backbone_starts_from_the_current_policy(
    sqlite_trainable, tiny_policy, tmp_path
) -> None:
    from rlhf_train.models.source import resolve_policy

    with transaction(sqlite_trainable.sessions) as session:
        policy_id = resolve_policy(session, str(tiny_policy), sqlite_trainable.models_dir).id
    export = make_export(sqlite_trainable, tmp_path / "export")
    result = train_reward(
        sqlite_trainable,
        RewardOptions(data=str(export), backbone="policy", name="rm-from-policy", max_steps=3),
    )
    with sqlite_trainable.sessions() as session:
        assert session.get(Model, result.model_id).parent_id == policy_id
    config = json.loads((result.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1


def test_lora_reward_model_is_saved_merged(sqlite_trainable, backbone, tmp_path) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export")
    result = train_reward(
        sqlite_trainable,
        RewardOptions(data=str(export), backbone=str(backbone), lora=True, max_steps=5),
    )
    assert not (result.path / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(result.path)
    assert not any("lora" in name for name, _ in plain.named_parameters())
    scores = RewardScorer.load(result.path).score(["Film 1 was"], [" great"])
    assert scores.shape == (1,)


def test_margin_and_centering_reach_the_trainer(sqlite_trainable, backbone, tmp_path) -> None:
    """With --use-margin the loss sees the export's margins. Centering pulls rewards to
    zero: the backbone's head starts with an offset that the pairwise loss alone leaves."""
    from rlhf_train.reward.train import _encoded

    export = make_export(sqlite_trainable, tmp_path / "export")
    from rlhf_train.export.reader import read_export
    from rlhf_train.reward.format import RewardInputFormat

    split = read_export(None, export).split("train")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    encoded = _encoded(split, tokenizer, RewardInputFormat("concat", 32), use_margin=True)
    assert encoded["margin"] == pytest.approx(split["margin"])
    assert (
        "margin"
        not in _encoded(split, tokenizer, RewardInputFormat("concat", 32), False).column_names
    )

    test = read_export(None, export).split("test")

    offset = build_tiny_bert_backbone(tmp_path / "offset-bert", head_bias=3.0)

    def centering_penalty(coefficient: float, name: str) -> float:
        """mean((r_chosen + r_rejected)^2) on the test pairs: what centering penalizes."""
        workspace = Workspace.open(
            sqlite_trainable.root, SETTINGS | {"reward.center_coefficient": coefficient}
        )
        options = RewardOptions(
            data=str(export), backbone=str(offset), name=name, max_steps=30, use_margin=True
        )
        scorer = RewardScorer.load(train_reward(workspace, options).path)
        total = scorer.score(test["prompt"], test["chosen"]) + scorer.score(
            test["prompt"], test["rejected"]
        )
        return float((total**2).mean())

    free, centered = centering_penalty(0.0, "free"), centering_penalty(1.0, "centered")
    assert free > 20 and centered < free / 4


def test_resume_continues_from_the_last_checkpoint(
    sqlite_trainable, backbone, tmp_path, monkeypatch
) -> None:
    from rlhf_train.runs.record import RunProgress

    export = make_export(sqlite_trainable, tmp_path / "export")
    workspace = Workspace.open(sqlite_trainable.root, SETTINGS | {"reward.checkpoint_every": 2})
    original = RunProgress.on_step_end

    def killed_after_step_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(RunProgress, "on_step_end", killed_after_step_3, raising=False)
    options = RewardOptions(data=str(export), backbone=str(backbone), name="resumed", max_steps=5)
    with pytest.raises(KeyboardInterrupt):
        train_reward(workspace, options)
    with workspace.sessions() as session:
        run = session.scalars(select(TrainingRun)).one()
        assert run.status == "cancelled"
    assert not (workspace.models_dir / "resumed").exists()
    monkeypatch.undo()

    result = train_reward(workspace, RewardOptions(data=""), resume=True)
    assert result.run_id == run.id and result.name == "resumed"
    assert result.metrics["train_steps"] == 5
    with workspace.sessions() as session:
        assert session.get(TrainingRun, run.id).status == "succeeded"
    assert result.metrics["resumed_from_step"] == 2
    steps = [json.loads(line)["step"] for line in Path(run.log_path).read_text().splitlines()]
    assert steps[0] == 1 and steps[-1] == 5


def _cli(workspace: Workspace, *args: str) -> int:
    return main(["--workspace", str(workspace.root), *args])


def _train_cli(workspace: Workspace, data: str, backbone: str, *args: str) -> int:
    """`rlhf train reward --data DATA --backbone BACKBONE ARGS...`"""
    return _cli(workspace, "train", "reward", "--data", data, "--backbone", backbone, *args)


def test_cli_trains_and_evaluates(sqlite_trainable, backbone, tmp_path, capsys) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export")
    code = _train_cli(
        sqlite_trainable,
        str(export),
        str(backbone),
        "--name",
        "rm",
        "--max-steps",
        "20",
        "--learning-rate",
        "0.003",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--no-progress",
    )
    out = capsys.readouterr().out
    assert code == 0 and "Pairwise accuracy" in out and "rm" in out
    code = _cli(sqlite_trainable, "evaluate", "reward", "rm", "--data", str(export))
    out = capsys.readouterr().out
    assert code == 0 and "Pairwise accuracy" in out
    folder = sqlite_trainable.root / "reports" / "rm" / "eval-export"
    assert (folder / "diagnostics.json").is_file() and (folder / "calibration.png").is_file()
    assert _cli(sqlite_trainable, "runs", "list") == 0
    assert "succeeded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make_data", "message"),
    [
        (lambda tmp: str(tmp / "missing"), "There is no export"),
        (lambda tmp: str(tmp), "not a prefloop export"),
        (lambda tmp: str(tmp / "export"), "already registered"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(
    sqlite_trainable, backbone, tmp_path, capsys, make_data, message
) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export")
    with transaction(sqlite_trainable.sessions) as session:
        from db.registry import register_model

        register_model(session, name="taken", kind="reward", path=str(backbone))
    code = _train_cli(
        sqlite_trainable,
        make_data(tmp_path),
        str(backbone),
        "--name",
        "taken",
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert export.exists()
    _nothing_written(sqlite_trainable)


def _nothing_written(workspace: Workspace) -> None:
    with workspace.sessions() as session:
        assert session.scalars(select(TrainingRun)).all() == []
    assert [p.name for p in workspace.models_dir.iterdir()] == []


def test_backbone_that_cannot_be_found_offline(sqlite_trainable, tmp_path, capsys) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export")
    code = _train_cli(
        sqlite_trainable,
        str(export),
        "nobody/no-such-model",
    )
    err = capsys.readouterr().err
    assert code == 2 and "nobody/no-such-model" in err and "offline" in err
    _nothing_written(sqlite_trainable)


def test_lora_target_the_architecture_lacks(sqlite_trainable, backbone, tmp_path, capsys) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export")
    code = _train_cli(
        sqlite_trainable,
        str(export),
        str(backbone),
        "--lora",
        "--lora-targets",
        "q_proj,query_key_value",
    )
    err = capsys.readouterr().err
    assert code == 2 and "'query_key_value'" in err and "q_proj" in err
    _nothing_written(sqlite_trainable)


def test_empty_splits(sqlite_trainable, backbone, tmp_path, capsys) -> None:
    export = make_export(sqlite_trainable, tmp_path / "export", n=6, test_fraction=0.0)
    code = _cli(sqlite_trainable, "evaluate", "reward", str(backbone), "--data", str(export))
    err = capsys.readouterr().err
    assert code == 2 and "test split" in err and "empty" in err

    with pytest.raises(UserError, match="train split .* is empty"):
        from rlhf_train.export.reader import read_export

        read_export(None, _emptied_train(export, tmp_path)).split("train")


def _emptied_train(export: Path, tmp_path: Path) -> Path:
    from datasets import load_from_disk

    copy = tmp_path / "empty-train"
    data = load_from_disk(str(export / "hf"))
    data["train"] = data["train"].select([])
    data.save_to_disk(str(copy / "hf"), num_shards={name: 1 for name in data})
    (copy / "manifest.json").write_text((export / "manifest.json").read_text())
    return copy


def test_evaluating_a_policy_is_refused(sqlite_trainable, tiny_policy, tmp_path, capsys) -> None:
    from rlhf_train.models.source import resolve_policy

    with transaction(sqlite_trainable.sessions) as session:
        name = resolve_policy(session, str(tiny_policy), sqlite_trainable.models_dir).name
    export = make_export(sqlite_trainable, tmp_path / "export")
    code = _cli(sqlite_trainable, "evaluate", "reward", name, "--data", str(export))
    assert code == 2 and "not a reward model" in capsys.readouterr().err


@pytest.mark.slow
def test_default_minilm_backbone_trains_and_reloads(sqlite_trainable, tmp_path) -> None:
    """The packaged MiniLM reads (prompt, response) as a text pair, in training and scoring."""
    export = make_export(sqlite_trainable, tmp_path / "export", n=40)
    result = train_reward(sqlite_trainable, RewardOptions(data=str(export), max_steps=3))
    assert result.metrics["input_format"]["style"] == "pair"
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    model = AutoModelForSequenceClassification.from_pretrained(result.path).eval()
    with torch.no_grad():
        plain = model(**tokenizer("Film 1 was", " great", return_tensors="pt")).logits[0, 0]
    ours = RewardScorer.load(result.path).score(["Film 1 was"], [" great"])[0]
    assert ours == pytest.approx(plain.item(), abs=1e-5)
