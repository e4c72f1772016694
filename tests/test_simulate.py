"""Simulated annotators decide as their model says and judge through the app's functions;
`rlhf simulate` runs rounds of annotation and retraining unattended on tiny models."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import transaction
from db.models import Judgment, Pair, PairLease, Round, User
from db.prompts import add_prompts
from rlhf_train.cli import main
from rlhf_train.judgments.simulated import TASKS, SimulatedAnnotator, annotate, decide
from rlhf_train.rounds.generate import generate_round
from rlhf_train.workspace import Workspace
from tests.helpers import round_request, simulation_workspace
from tests.tiny_models import build_tiny_reward_backbone

# ---- the decision model -------------------------------------------------------------------


def test_without_noise_the_oracle_decides_and_equal_scores_tie() -> None:
    rng = random.Random(0)
    assert {decide(0.5, 0.1, rng, 0.0, 0.0).choice for _ in range(50)} == {"A"}
    assert {decide(-0.2, 0.1, rng, 0.0, 0.0).choice for _ in range(50)} == {"B"}
    assert {decide(0.3, 0.3, rng, 0.4, 0.0).choice for _ in range(50)} == {"tie"}


def test_bradley_terry_noise_gives_the_modelled_preference_rate() -> None:
    rng = random.Random(1)
    # A gap of noise * ln 3 is a 3:1 preference for A.
    noise = 0.2
    gap = noise * math.log(3)
    picks = Counter(decide(gap, 0.0, rng, noise, 0.0).choice for _ in range(6000))
    assert abs(picks["A"] / 6000 - 0.75) < 0.025


def test_position_bias_picks_the_left_response_unread() -> None:
    rng = random.Random(2)
    decisions = [decide(1.0, 0.0, rng, 0.0, 1.0) for _ in range(200)]
    assert all(d.choice == d.left_sample for d in decisions)
    assert {d.left_sample for d in decisions} == {"A", "B"}  # the side shown is random
    half = [decide(1.0, 0.0, rng, 0.0, 0.5) for _ in range(4000)]
    # Unbiased picks are always A; biased ones are the left side, A half the time.
    assert abs(sum(d.choice == "B" for d in half) / 4000 - 0.25) < 0.03


def test_the_oracles_rank_as_their_tasks_say() -> None:
    texts = ["A wonderful, moving film.", "A dull and awful film.", "A film."]
    positive, negative = (TASKS[t](texts) for t in ("positive", "negative"))
    assert positive[0] > positive[2] > positive[1]
    assert negative[1] > negative[2] > negative[0]


def test_shorter_prefers_a_brief_finished_answer_to_a_cut_one_or_none() -> None:
    texts = {
        "five words, finished": "A fine film, well acted.",
        "three words, finished": "A fine film.",
        "twelve words, finished": "A fine film, well acted, with a score I still remember fondly.",
        "six words, cut": "A fine film, well acted and",
        "empty": "",
        "one word, cut": "Fine",
    }
    scores = dict(zip(texts, TASKS["shorter"](list(texts.values())), strict=True))
    best_first = sorted(scores, key=scores.get, reverse=True)
    assert best_first == [
        "five words, finished",
        "three words, finished",
        "twelve words, finished",
        "six words, cut",
        "one word, cut",
        "empty",
    ]
    # Over the floor each word costs the same: a tenth, like a small sentiment shift.
    assert scores["five words, finished"] == pytest.approx(-0.5)
    assert scores["twelve words, finished"] == pytest.approx(-1.2)


# ---- judging through the database functions --------------------------------------------------


def test_simulated_annotators_respect_overlap_and_stop_at_the_label_budget(
    workspace, tiny_policy
) -> None:
    with transaction(workspace.sessions) as session:
        add_prompts(session, [f"Prompt {i} says" for i in range(10)], source="t", chat=False)
        session.flush()
    generate_round(workspace, round_request(tiny_policy, n_prompts=10), progress=False)
    with transaction(workspace.sessions) as session:
        session.get(Round, 1).overlap = 2
        from db.users import create_user

        users = [create_user(session, f"sim-{i}", "annotator", "password-123") for i in (1, 2, 3)]
        team = [
            SimulatedAnnotator(u.id, u.name, TASKS["shorter"], 0.0, 0.0, random.Random(i))
            for i, u in enumerate(users)
        ]
        pairs = session.scalar(select(func.count(Pair.id)))
    assert annotate(workspace, team, labels=7) == 7
    # Then everything that is left: every pair reaches the overlap and no more.
    assert annotate(workspace, team, labels=1000) == 2 * pairs - 7
    with workspace.sessions() as session:
        counts = session.execute(select(Pair.judgment_count)).scalars().all()
        assert set(counts) == {2}
        assert session.scalar(select(func.count(PairLease.id))) == 0
        by = Counter(session.scalars(select(Judgment.annotator_id)))
        assert len(by) == 3  # the three took turns
        # With no noise, each non-tie judgment picked the response the oracle prefers.
        for judgment in session.scalars(select(Judgment)):
            pair = session.get(Pair, judgment.pair_id)
            a, b = TASKS["shorter"]([pair.sample_a.text, pair.sample_b.text])
            expected = "tie" if a == b else ("A" if a > b else "B")
            assert judgment.choice == expected


# ---- rlhf simulate ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("sim-rm"))


def test_simulate_runs_rounds_unattended_and_reports_each(
    tmp_path, tiny_policy, reward_backbone, monkeypatch, capsys
) -> None:
    root = simulation_workspace(tmp_path, monkeypatch, tiny_policy, reward_backbone)
    args = ["--task", "shorter", "--annotators", "2", "--rounds", "2", "--labels-per-round", "6"]
    code = main(["--workspace", str(root), "simulate", *args, "--noise", "0", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "round 0:" in out and "round 1:" in out and "round 2:" in out
    assert "words_mean (mean words per response):" in out

    workspace = Workspace.open(root)
    with workspace.sessions() as session:
        statuses = dict(session.execute(select(Round.number, Round.status)).all())
        assert statuses == {1: "closed", 2: "closed", 3: "open"}
        judges = set(
            session.scalars(select(User.name).join(Judgment, Judgment.annotator_id == User.id))
        )
        assert judges == {"sim-1", "sim-2"}
        per_round = dict(
            session.execute(
                select(Pair.round_id, func.count(Judgment.id))
                .join(Judgment, Judgment.pair_id == Pair.id)
                .group_by(Pair.round_id)
            ).all()
        )
        assert sorted(per_round.values()) == [6, 6]
    summary = json.loads(next((root / "reports" / "simulations").glob("*.json")).read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["rounds"][0]["labels"] == 0 and summary["rounds"][2]["labels"] == 6
    assert all(r["figure"] is not None for r in summary["rounds"])
    assert summary["rounds"][1]["reward"] is not None and summary["rounds"][1]["kl"] is not None


def test_simulate_refuses_bad_options(sqlite_workspace, capsys) -> None:
    root = str(sqlite_workspace.root)
    assert main(["--workspace", root, "simulate", "--task", "shorter", "--noise", "-1"]) == 2
    assert "--noise is -1.0" in capsys.readouterr().err
    assert main(["--workspace", root, "simulate", "--task", "positive", "--rounds", "0"]) == 2
    assert "--rounds is 0" in capsys.readouterr().err
