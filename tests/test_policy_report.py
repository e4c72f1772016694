"""`rlhf evaluate policy`: reports on tiny policies, checked against hand counts of the
scores, the judges and the annotators' judgments, and refusals that write nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import transaction
from db.judgments import record_judgment
from db.models import Evaluation, Model, Prompt
from db.prompts import add_prompts
from db.registry import register_model
from db.rounds import NewPair, NewSample, add_samples_and_pairs, round_for_generation
from db.users import create_user
from rlhf_train.cli import main
from rlhf_train.errors import UserError
from rlhf_train.evaluation.report import PolicyEvaluationOptions, evaluate_policy_report
from rlhf_train.evaluation.text import summary_lines
from rlhf_train.judges import JUDGES
from rlhf_train.workspace import Workspace
from tests.tiny_models import build_tiny_bert_backbone

N_PROMPTS = 8
EVAL_PROMPTS = [f"The film number {i} was" for i in range(N_PROMPTS + 2)]
TRAIN_PROMPTS = ["A train prompt about", "Another train prompt on"]
SETTINGS = {
    "runtime.threads": 1,
    "runtime.device": "cpu",
    "evaluate.n_prompts": N_PROMPTS,
    "evaluate.max_new_tokens": 8,
    "evaluate.temperature": 1.0,
    "evaluate.judges": "sentiment,words",
}


def vowel_share(prompts: list[str], responses: list[str]) -> list[float]:
    """A reward function for --reward module:function."""
    return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


REWARD_FILE = """
def score(prompts, responses):
    return [float(sum(c in "aeiou" for c in r)) for r in responses]
"""


@pytest.fixture
def evaluator(workspace) -> Workspace:
    """The test's workspace with evaluation settings sized for tiny models."""
    opened = Workspace.open(workspace.root, SETTINGS | {"database.url": workspace.db_url})
    yield opened
    opened.engine.dispose()


@pytest.fixture(scope="session")
def reward_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert_backbone(tmp_path_factory.mktemp("rm"), seed=2)


@pytest.fixture(scope="session")
def sharp_policy(tmp_path_factory: pytest.TempPathFactory, tiny_policy_v2: Path) -> Path:
    """tiny_policy_v2 with its (tied) embeddings scaled up: a peaked next-token
    distribution, so its samples differ from the near-uniform tiny policy's even under the
    same seed, as a trained policy's would."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("sharp-policy")
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_v2)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_policy_v2).save_pretrained(folder)
    return folder


def _prompts(workspace: Workspace, eval_texts: list[str], train_texts: list[str]) -> None:
    with transaction(workspace.sessions) as session:
        add_prompts(session, train_texts, source="test", chat=False)
        add_prompts(session, eval_texts, source="test", chat=False, split_of=lambda _: "eval")


def _policies(workspace: Workspace, base: Path, tuned: Path | None = None) -> None:
    """ "base" (current), and "tuned", trained from it, when given."""
    with transaction(workspace.sessions) as session:
        root = register_model(session, name="base", kind="policy", path=str(base), promote=True)
        if tuned is not None:
            register_model(session, name="tuned", kind="policy", path=str(tuned), parent=root)


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _evaluations(workspace: Workspace) -> list[Evaluation]:
    with workspace.sessions() as session:
        return list(session.scalars(select(Evaluation).order_by(Evaluation.id)))


def _one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and ". " not in message, message


def test_a_policy_against_itself_is_a_draw_at_zero_kl(evaluator, tiny_policy, reward_folder):
    _prompts(evaluator, EVAL_PROMPTS, TRAIN_PROMPTS)
    _policies(evaluator, tiny_policy)
    with transaction(evaluator.sessions) as session:
        rm = register_model(session, name="rm", kind="reward", path=str(reward_folder))
    # Defaults: the current policy, the newest reward model, the lineage's root as reference.
    options = PolicyEvaluationOptions(against="base", progress=False)
    report = evaluate_policy_report(evaluator, options)
    metrics = report.metrics
    mine, theirs = metrics["figures"]["policy"], metrics["figures"]["against"]
    assert (metrics["policy"], metrics["against"], metrics["reference"]) == ("base",) * 3
    assert metrics["reward"] == "reward model rm" and metrics["reward_model_id"] == rm.id
    assert mine == theirs  # the same seed on the same prompts: the same responses
    assert abs(mine["kl"]) < 1e-5 and mine["reference_perplexity"] > 1.0
    assert metrics["reward_win_rate"] == 0.5
    assert metrics["reward_comparison"]["ties"] == N_PROMPTS
    assert metrics["annotator_win_rate"] is None and metrics["annotator_judgments"] == 0
    assert metrics["prompt_split"] == "eval" and metrics["n_prompts"] == N_PROMPTS
    histogram = metrics["score_histogram"]
    assert sum(histogram["policy"]) == N_PROMPTS and histogram["policy"] == histogram["against"]
    assert len(histogram["edges"]) == len(histogram["policy"]) + 1

    folder = report.folder
    assert (
        folder == evaluator.root / "reports" / "policies" / f"base-vs-base-{report.evaluation_id}"
    )
    names = {path.name for path in folder.iterdir()}
    assert names == {"report.json", "report.md", "reward_distribution.png", "main_figures.png"}
    for plot in ("reward_distribution.png", "main_figures.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No temporary folder is left beside it.
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]
    written = _report(folder)
    assert written.pop("evaluation_id") == report.evaluation_id
    samples = written.pop("samples")
    assert written == metrics
    assert len(samples) == N_PROMPTS
    assert [row["prompt"] for row in samples] == EVAL_PROMPTS[:N_PROMPTS]
    assert set(samples[0]) == {
        "prompt",
        "policy_response",
        "policy_score",
        "policy_sentiment",
        "policy_words",
        "against_response",
        "against_score",
        "against_sentiment",
        "against_words",
    }
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "| Figure | P: base | Q: base |" in markdown and "![main_figures.png]" in markdown

    [recorded] = _evaluations(evaluator)
    assert recorded.id == report.evaluation_id and recorded.report_path == str(folder)
    assert (recorded.policy_id, recorded.against_id, recorded.reward_model_id) == (
        metrics["policy_id"],
        metrics["policy_id"],
        rm.id,
    )
    assert recorded.metrics == metrics and "samples" not in recorded.metrics
    assert any("win rate" in line for line in summary_lines(metrics))


def test_two_policies_win_rate_and_judges_match_a_hand_count(
    evaluator, tiny_policy, sharp_policy, tmp_path
):
    _prompts(evaluator, EVAL_PROMPTS, TRAIN_PROMPTS)
    _policies(evaluator, tiny_policy, sharp_policy)
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text(REWARD_FILE, encoding="utf-8")
    options = PolicyEvaluationOptions(
        policy="tuned", against="base", reward=f"{reward_file}:score", progress=False
    )
    report = evaluate_policy_report(evaluator, options)
    metrics, samples = report.metrics, _report(report.folder)["samples"]
    # The reward is the function's, recomputed here from the responses in the report.
    for row in samples:
        for side in ("policy", "against"):
            response = row[f"{side}_response"]
            assert row[f"{side}_score"] == sum(c in "aeiou" for c in response)
            assert row[f"{side}_words"] == len(response.split())
            assert row[f"{side}_sentiment"] == JUDGES["sentiment"]([""], [response])[0]
    wins = sum(row["policy_score"] > row["against_score"] for row in samples)
    ties = sum(row["policy_score"] == row["against_score"] for row in samples)
    assert metrics["reward_win_rate"] == pytest.approx((wins + ties / 2) / N_PROMPTS)
    assert metrics["reward_comparison"]["wins"] == wins
    assert wins and ties < N_PROMPTS - wins  # wins, losses and ties: a real count
    mine, theirs = metrics["figures"]["policy"], metrics["figures"]["against"]
    assert mine["score_mean"] == pytest.approx(sum(r["policy_score"] for r in samples) / N_PROMPTS)
    assert mine["words_mean"] == pytest.approx(sum(r["policy_words"] for r in samples) / N_PROMPTS)
    # The reference is the root of tuned's lineage, base: base is at zero KL, tuned is not.
    assert metrics["reference"] == "base"
    # (A Monte-Carlo estimate on 8 samples: its sign is noise, its size is not.)
    assert abs(theirs["kl"]) < 1e-5 and abs(mine["kl"]) > 0.1
    assert metrics["reward"] == f"function {reward_file}:score"
    assert metrics["reward_model_id"] is None

    # The same prompts and seed again: the same figures, a new evaluation and folder.
    again = evaluate_policy_report(evaluator, options)
    assert again.metrics["figures"] == metrics["figures"]
    assert again.evaluation_id != report.evaluation_id and again.folder != report.folder
    assert again.folder.name == f"tuned-vs-base-{again.evaluation_id}"
    assert len(_evaluations(evaluator)) == 2


def _judged_round(workspace: Workspace) -> None:
    """Round 1 with pairs of one tuned and one base sample (both orders), judged by hand,
    and a pair of two tuned samples whose judgment must not count."""
    decoding = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    with transaction(workspace.sessions) as session:
        models = {m.name: m for m in session.scalars(select(Model))}
        tuned, base = models["tuned"], models["base"]
        round_ = round_for_generation(
            session, 1, policy=tuned, previous=base, overlap=3, gold_rate=0.0
        )
        prompt_ids = list(session.scalars(select(Prompt.id).order_by(Prompt.id).limit(4)))
        samples = []
        for prompt_id, (first, second) in zip(
            prompt_ids, [(tuned, base), (base, tuned), (tuned, base), (tuned, tuned)], strict=True
        ):
            for model, text in ((first, "one response"), (second, "another response")):
                samples.append(NewSample(prompt_id, model.id, text, decoding, 0, 2, True))
        strategies = ["new_vs_previous"] * 3 + ["random"]
        pairs = [NewPair(2 * i, 2 * i + 1, strategy) for i, strategy in enumerate(strategies)]
        created = add_samples_and_pairs(session, round_, samples, pairs)
        users = {n: create_user(session, n, "annotator", "password-123").id for n in "abc"}
        votes = [
            (0, "a", "A"),  # tuned is A: a win
            (0, "b", "B"),  # a loss
            (1, "a", "B"),  # tuned is B: a win
            (1, "b", "tie"),  # half
            (1, "c", "skip"),  # not a judgment
            (2, "a", "both_bad"),  # half
            (3, "a", "A"),  # tuned against tuned: not a head-to-head
        ]
        for position, user, choice in votes:
            record_judgment(
                session, users[user], created[position].id, choice=choice, left_sample="A"
            )


def test_annotators_win_rate_is_a_hand_count_of_judgments(evaluator, tiny_policy, tiny_policy_v2):
    _prompts(evaluator, EVAL_PROMPTS, TRAIN_PROMPTS)
    _policies(evaluator, tiny_policy, tiny_policy_v2)
    _judged_round(evaluator)
    options = PolicyEvaluationOptions("tuned", against="base", round_number=1, progress=False)
    report = evaluate_policy_report(evaluator, options)
    metrics = report.metrics
    # 2 wins, 1 loss, 2 ties counting half: 3 of 5.
    assert metrics["annotator_judgments"] == 5
    assert metrics["annotator_win_rate"] == pytest.approx(3 / 5)
    assert metrics["annotator_comparison"] == {"wins": 2, "losses": 1, "ties": 2}
    # No reward model is registered: the report says so instead of failing.
    assert metrics["reward"] is None and metrics["reward_win_rate"] is None
    assert metrics["figures"]["policy"]["score_mean"] is None
    assert metrics["score_histogram"] is None
    assert any("No reward model" in note for note in metrics["notes"])
    assert not (report.folder / "reward_distribution.png").exists()
    assert (report.folder / "main_figures.png").is_file()
    assert metrics["round"] == 1
    [recorded] = _evaluations(evaluator)
    with evaluator.sessions() as session:
        from db.rounds import get_round

        assert recorded.round_id == get_round(session, 1).id
    assert recorded.reward_model_id is None
    assert "0.600 over 5 judgments" in (report.folder / "report.md").read_text(encoding="utf-8")
    # Issue 17: the ratings of every policy. Bradley-Terry on the same votes, both_bad left
    # out: tuned 2.5 wins of 4 against base (the root, at 1000): 1000 + 400 log10(2.5/1.5).
    plain = metrics["leaderboard"]["plain"]
    assert plain["anchor"] == "base" and plain["n_votes"] == 4
    tuned = next(row for row in plain["ratings"] if row["policy"] == "tuned")
    assert tuned["rating"] == pytest.approx(1000 + 400 * math.log10(2.5 / 1.5), abs=1e-4)
    assert metrics["leaderboard"]["style_control"]["style_control"] is True
    assert "## Leaderboard" in (report.folder / "report.md").read_text(encoding="utf-8")


def _cli_environment(monkeypatch: pytest.MonkeyPatch, workspace: Workspace) -> None:
    """The CLI reads the workspace's settings afresh: the database and tiny sizes come
    from the environment, as a user's RLHF_* variables would give them."""
    monkeypatch.setenv("RLHF_DB_URL", workspace.db_url)
    for key, value in SETTINGS.items():
        monkeypatch.setenv("RLHF_" + key.replace(".", "_").upper(), str(value))


def test_cli_falls_back_to_train_prompts_with_a_module_reward(
    evaluator, tiny_policy, tmp_path, capsys, monkeypatch
):
    _cli_environment(monkeypatch, evaluator)
    _prompts(evaluator, [], TRAIN_PROMPTS)
    _policies(evaluator, tiny_policy)
    out = tmp_path / "my-report"
    code = main(
        [
            "--workspace",
            str(evaluator.root),
            "evaluate",
            "policy",
            "--reward",
            "tests.test_policy_report:vowel_share",
            "--n-prompts",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "base on 2 train-split prompts" in printed and str(out) in printed
    report = _report(out)
    assert report["prompt_split"] == "train" and report["n_prompts"] == len(TRAIN_PROMPTS)
    assert any("no eval-split prompts" in note for note in report["notes"])
    assert report["against"] is None and report["figures"]["against"] is None
    assert report["samples"][0]["against_response"] is None
    for row in report["samples"]:
        assert row["policy_score"] == pytest.approx(
            vowel_share([], [row["policy_response"]])[0], abs=1e-6
        )
    assert [e.report_path for e in _evaluations(evaluator)] == [str(out)]


def test_bad_input_is_one_sentence_and_writes_nothing(
    evaluator, tiny_policy, tmp_path, capsys, monkeypatch
):
    def refused(**options) -> str:
        with pytest.raises(UserError) as caught:
            evaluate_policy_report(evaluator, PolicyEvaluationOptions(progress=False, **options))
        _one_sentence(str(caught.value))
        return str(caught.value)

    assert "no prompts" in refused()
    _prompts(evaluator, EVAL_PROMPTS, [])
    assert "no current policy" in refused()
    _policies(evaluator, tiny_policy)
    assert "nope" in refused(policy="nope")
    assert "nope" in refused(against="nope")
    assert "round 7" in refused(round_number=7)
    assert "no_such_module" in refused(reward="no_such_module:score")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine", encoding="utf-8")
    assert "busy" in refused(out=busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    reports = evaluator.root / "reports" / "policies"
    assert not reports.exists() or not any(reports.iterdir())
    with evaluator.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Evaluation)) == 0
        assert session.scalar(select(func.count()).select_from(Model)) == 1

    _cli_environment(monkeypatch, evaluator)
    code = main(["--workspace", str(evaluator.root), "evaluate", "policy", "nope"])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: No model 'nope'") and "\n" not in error
