"""Ranking rounds end to end on tiny models: `rlhf generate --rank K` stores tasks of K
responses, simulated annotators rank them by Plackett-Luce through the app's functions,
and `rlhf simulate --rank K` retrains from the rankings unattended."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
from sqlalchemy import func, select

from db.models import Judgment, Pair, Round, TaskSample
from rlhf_train.cli import main
from rlhf_train.judgments.simulated import plackett_luce
from rlhf_train.workspace import Workspace
from tests.helpers import rlhf, simulation_workspace, store_prompts


def test_plackett_luce_follows_the_oracle_and_its_noise() -> None:
    rng = random.Random(0)
    assert plackett_luce([0.1, 0.9, 0.5], rng, 0.0) == [[1], [2], [0]]
    assert plackett_luce([0.2, 0.2, 0.7], rng, 0.0) == [[2], [0, 1]]  # equal scores tie
    # Two responses alone: the Bradley-Terry rate, 3:1 for a gap of noise x ln 3.
    noise = 0.25
    firsts = Counter(
        plackett_luce([noise * math.log(3), 0.0], rng, noise)[0][0] for _ in range(6000)
    )
    assert abs(firsts[0] / 6000 - 0.75) < 0.025
    # Three: the best is drawn with probability proportional to exp(score / noise).
    scores = [noise * math.log(4), noise * math.log(2), 0.0]  # weights 4 : 2 : 1
    best = Counter(plackett_luce(scores, rng, noise)[0][0] for _ in range(7000))
    assert abs(best[0] / 7000 - 4 / 7) < 0.025 and abs(best[2] / 7000 - 1 / 7) < 0.02


def test_generate_rank_k_makes_tasks_of_k_responses(sqlite_workspace, tiny_policy, capsys) -> None:
    workspace = sqlite_workspace
    store_prompts(workspace, [f"Prompt {i} says" for i in range(4)])
    args = ["generate", "--round", "1", "--policy", str(tiny_policy), "--n-prompts", "4"]
    assert rlhf(workspace, *args, "--rank", "4", "--max-new-tokens", "6", "--no-progress") == 0
    assert "4 ranking tasks of 4" in capsys.readouterr().out
    with workspace.sessions() as session:
        round_ = session.scalar(select(Round))
        assert (round_.kind, round_.rank_k) == ("ranking", 4)
        per_task = Counter(session.scalars(select(TaskSample.pair_id)))
        assert sorted(per_task.values()) == [4, 4, 4, 4]
        assert session.scalar(select(func.count(Pair.id))) == 4
    assert rlhf(workspace, "rounds", "show", "1") == 0
    assert "ranking, 4 responses per task" in capsys.readouterr().out
    # Resuming as a pairwise round is refused, in one sentence.
    assert rlhf(workspace, *args, "--n-prompts", "5", "--no-progress") == 2
    assert "Round 1 ranks 4 responses" in capsys.readouterr().err
    assert rlhf(workspace, *args, "--rank", "7", "--no-progress") == 2
    assert "round.rank" in capsys.readouterr().err


@pytest.fixture
def reward_backbone(tmp_path_factory):
    from tests.tiny_models import build_tiny_reward_backbone

    return build_tiny_reward_backbone(tmp_path_factory.mktemp("rm-backbone"))


def test_simulate_rank_retrains_from_rankings(
    tmp_path, tiny_policy, reward_backbone, monkeypatch, capsys
) -> None:
    root = simulation_workspace(tmp_path, monkeypatch, tiny_policy, reward_backbone)
    args = ["--task", "shorter", "--annotators", "2", "--rounds", "1", "--labels-per-round", "4"]
    assert main(["--workspace", str(root), "simulate", *args, "--rank", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "round 1:" in out
    workspace = Workspace.open(root)
    with workspace.sessions() as session:
        kinds = dict(session.execute(select(Round.number, Round.kind)).tuples().all())
        assert kinds == {1: "ranking", 2: "ranking"}  # the next round is ranked too
        rankings = session.scalars(select(Judgment).where(Judgment.choice == "ranking")).all()
        assert len(rankings) == 4
        for judgment in rankings:
            assert sorted(s for group in judgment.ranking for s in group) == sorted(
                judgment.display_order
            )
            assert len(judgment.display_order) == 3
    summary = json.loads(next((root / "reports" / "simulations").glob("*.json")).read_text())
    assert summary["options"]["rank"] == 3 and summary["rounds"][1]["labels"] == 4
    export = json.loads(next((root / "exports").glob("*/manifest.json")).read_text())
    assert export["counts"]["rankings"] == 4 and export["counts"]["ranking_pairs"] == 12
