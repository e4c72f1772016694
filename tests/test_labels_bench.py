"""bench/labels.py: the label-efficiency benchmark's core on a tiny pool with a tiny
BERT backbone, trained for real; the selection rules, so that uncertainty cannot
silently turn into random; the frozen-head lever of labels_head.py; the pool cache; and
the summary over seeds."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.labels import check_mergeable, interval, main, summarize
from bench.labels_core import (
    Pairs,
    Setup,
    Trained,
    disagreement,
    flatten,
    measure,
    most_disputed,
    most_uncertain,
    run_strategy,
    train_reward_model,
    within_prompt_pairs,
)
from bench.labels_head import FrozenFeatures, head_trainer
from bench.labels_pool import Part, Pool, PoolSettings, load_or_generate
from rlhf_train.config import RewardSettings
from rlhf_train.errors import UserError
from tests.tiny_models import build_tiny_bert_backbone, build_tiny_policy

WORDS = ["great", "wonderful", "loved", "charming", "terrible", "boring", "waste", "story"]
TINY = RewardSettings(epochs=2.0, learning_rate=3e-3, batch_size=8, max_length=32)


def tiny_pool(train_prompts: int = 24, heldout_prompts: int = 8) -> Pool:
    rng = random.Random(0)

    def part(count: int, offset: int) -> Part:
        prompts = [f"Film {offset + i} was" for i in range(count)]
        responses = [
            [f" {rng.choice(WORDS)} and {rng.choice(WORDS)} music" for _ in range(4)]
            for _ in prompts
        ]
        return Part(prompts, responses)

    return Pool(PoolSettings(), part(train_prompts, 0), part(heldout_prompts, 1000))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    torch.set_num_threads(1)
    backbone = build_tiny_bert_backbone(tmp_path_factory.mktemp("bert"))
    return Setup(tiny_pool(), "positive", 0.1, str(backbone), TINY, heldout_count=40)


def test_most_uncertain_takes_the_smallest_gaps_each_response_once() -> None:
    pairs = Pairs(
        np.array([0, 0, 2, 4, 1, 6]), np.array([1, 2, 3, 5, 3, 7]), np.array([0, 0, 1, 2, 0, 0])
    )
    rewards = np.array([0.0, 0.1, 0.05, 3.0, 1.0, 1.5, 0.2, 3.0])
    everything = np.ones(len(pairs), dtype=bool)
    # Gaps: 0.1, 0.05, 2.95, 0.5, 2.9, 2.8. Pair 1 (0, 2) first; pair 0 shares response 0.
    assert most_uncertain(pairs, rewards, everything, 2, np.random.default_rng(0)) == [1, 3]
    without_first = everything.copy()
    without_first[1] = False
    # Pair 4 (1, 3) shares response 1 with pair 0.
    assert most_uncertain(pairs, rewards, without_first, 9, np.random.default_rng(0)) == [
        0,
        3,
        5,
        2,
    ]
    # One pair per prompt: pair 0 (prompt 0) also keeps out pair 5 (prompt 0), which shares
    # no response with it.
    assert most_uncertain(
        pairs, rewards, without_first, 9, np.random.default_rng(0), one_per_prompt=True
    ) == [0, 3, 2]


def test_measure_accuracy_and_calibration() -> None:
    pairs = Pairs(np.array([0, 2]), np.array([1, 3]), np.array([0, 1]))
    oracle = [1.0, 0.0, 0.0, 1.0]  # a wins the first pair, b the second
    right = measure(np.array([5.0, 0.0, 0.0, 5.0]), oracle, pairs)
    assert right["accuracy"] == 1.0 and right["brier"] < 0.001 and right["ece"] < 0.01
    assert measure(np.array([0.0, 5.0, 5.0, 0.0]), oracle, pairs)["accuracy"] == 0.0
    undecided = measure(np.zeros(4), oracle, pairs)
    assert undecided["accuracy"] == 0.5 and undecided["brier"] == 0.25
    assert math.isclose(undecided["ece"], 0.0)  # p = 0.5 for outcomes 1 and 0: calibrated


def test_candidates_skip_identical_texts() -> None:
    responses = flatten(Part(["p", "q"], [["x", "x", "y"], ["z", "w", "v"]]))
    pairs = within_prompt_pairs(responses)
    assert [(int(a), int(b)) for a, b in zip(pairs.a, pairs.b, strict=True)] == [
        (0, 2), (1, 2), (3, 4), (3, 5), (4, 5),
    ]  # fmt: skip


def test_uncertainty_retrains_between_batches_and_picks_the_closest_pairs(setup) -> None:
    models: list[tuple[int, Trained]] = []

    def watched(backbone, responses, pairs, labels, settings, device="cpu") -> Trained:
        trained = train_reward_model(backbone, responses, pairs, labels, settings, device)
        models.append((len(pairs), trained))
        return trained

    points = run_strategy(setup, "uncertainty", seed=3, sizes=[16], batch=8, trainer=watched)
    # One model per batch, each trained on every label so far.
    assert [n for n, _ in models] == [8, 16]
    assert [p.labels for p in points] == [8, 16]
    assert points[1].chosen[:8] == points[0].chosen
    assert points[1].steps > points[0].steps > 0
    # The second batch is what the first model is least sure about.
    scores = models[0][1].score(setup.train)
    available = np.ones(len(setup.candidates), dtype=bool)
    available[points[0].chosen] = False
    expected = most_uncertain(setup.candidates, scores, available, 8, np.random.default_rng(9))
    assert sorted(points[1].chosen[8:]) == sorted(expected)
    gaps = np.abs(scores[setup.candidates.a] - scores[setup.candidates.b])
    assert gaps[points[1].chosen[8:]].mean() < gaps[available].mean()

    # Random with the same seed starts from the same batch and nests its sizes.
    randomly = run_strategy(setup, "random", seed=3, sizes=[8, 16], batch=8)
    assert randomly[0].chosen == points[0].chosen
    assert randomly[1].chosen[:8] == randomly[0].chosen
    assert randomly[1].chosen[8:] != points[1].chosen[8:]
    for point in points + randomly:
        assert 0.0 <= point.figures["accuracy"] <= 1.0
        assert point.train_pairs == point.labels - point.ties


def test_most_disputed_takes_the_largest_spread_each_response_once() -> None:
    pairs = Pairs(np.array([0, 0, 2, 4]), np.array([1, 2, 3, 5]), np.array([0, 0, 1, 2]))
    agree = np.array([0.0, 1.0, 2.0, 3.0, 0.0, 0.0])
    # Pair 0 (0, 1): the members put its gap at -1, +3 and -1; pair 2 (2, 3) at -1 each.
    members = [agree, np.array([3.0, 0.0, 2.0, 3.0, 0.0, 0.5]), agree]
    spread = disagreement(pairs, members)
    assert spread[2] == 0.0 and spread[0] > spread[3] > 0.0
    sigmoid = [1 / (1 + math.exp(-gap)) for gap in (-1.0, 3.0, -1.0)]
    assert spread[0] == pytest.approx(np.std(sigmoid))
    everything = np.ones(len(pairs), dtype=bool)
    # Pair 1 (0, 2) shares response 0 with pair 0, which spreads more.
    assert most_disputed(pairs, members, everything, 9, np.random.default_rng(0)) == [0, 3, 2]


def test_disagreement_trains_an_ensemble_and_labels_where_it_disagrees(setup) -> None:
    models: list[tuple[int, int, Trained]] = []

    def watched(backbone, responses, pairs, labels, settings, device="cpu") -> Trained:
        trained = train_reward_model(backbone, responses, pairs, labels, settings, device)
        models.append((len(pairs), settings.seed, trained))
        return trained

    points = run_strategy(setup, "disagreement", seed=3, sizes=[16], batch=8, trainer=watched)
    # Three members per batch, on as many labels as chosen so far, each with its own seed.
    assert [n for n, _, _ in models] == [8, 8, 8, 16, 16, 16]
    assert [seed for _, seed, _ in models[:3]] == [3, 301, 302]
    assert [p.labels for p in points] == [8, 16]
    assert points[1].chosen[:8] == points[0].chosen
    # The first point is random's first batch, measured on member 0 as random measures it.
    randomly = run_strategy(setup, "random", seed=3, sizes=[8], batch=8)
    assert points[0].chosen == randomly[0].chosen
    assert points[0].figures["accuracy"] == pytest.approx(randomly[0].figures["accuracy"])
    for point in points:
        assert 0.0 <= point.figures["ensemble_accuracy"] <= 1.0
    # The second batch is where the first batch's members disagree most.
    scores = [trained.score(setup.train) for _, _, trained in models[:3]]
    available = np.ones(len(setup.candidates), dtype=bool)
    available[points[0].chosen] = False
    spread = disagreement(setup.candidates, scores)
    assert spread[points[1].chosen[8:]].mean() > spread[available].mean()


def test_pool_is_cached_and_checked(tmp_path: Path) -> None:
    policy = build_tiny_policy(tmp_path / "policy")
    settings = PoolSettings(
        train_prompts=3, heldout_prompts=2, samples_per_prompt=2, max_new_tokens=4
    )
    path = tmp_path / "pool.json"
    pool = load_or_generate(path, settings, policy, batch_size=4, chunk=2)
    assert len(pool.train.prompts) == 3 and len(pool.heldout.prompts) == 2
    assert all(len(r) == 2 for r in pool.train.responses + pool.heldout.responses)
    assert not set(pool.train.prompts) & set(pool.heldout.prompts)
    # A complete pool never loads the policy again.
    again = load_or_generate(path, settings, tmp_path / "no-such-policy")
    assert again == pool
    # A larger pool keeps what the file has and samples only the prompts it lacks.
    larger = load_or_generate(path, replace(settings, train_prompts=4), policy, batch_size=4)
    assert larger.train.responses[:3] == pool.train.responses
    assert larger.train.prompts[3] == pool.heldout.prompts[0]
    with pytest.raises(UserError, match="other settings"):
        load_or_generate(path, replace(settings, max_new_tokens=5), policy)


def test_summary_intervals_and_goal() -> None:
    def point(accuracy: float) -> dict:
        return {
            "figures": {"accuracy": accuracy, "ece": 0.1, "brier": 0.2},
            "train_seconds": 1.0,
            "ties": 0,
        }

    results = {
        "runs": {
            "positive": {
                "random": {
                    str(s): {"512": point(0.80 + 0.02 * s), "256": point(0.7)} for s in range(3)
                },
                "uncertainty": {str(s): {"256": point(0.83)} for s in range(3)},
            }
        }
    }
    summary = summarize(results)["positive"]
    row = summary["table"]["random"]["512"]
    assert row["seeds"] == 3 and row["accuracy"] == pytest.approx(0.82)
    assert row["accuracy_ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), abs=1e-4)
    assert summary["goal"]["target"] == pytest.approx(0.82)
    assert summary["goal"]["strategies"]["uncertainty"] == {"labels_to_reach": 256, "met": True}
    assert summary["goal"]["strategies"]["random"]["met"] is False
    assert interval([0.5]) == (0.5, None)


def test_points_of_another_pool_are_not_merged(tmp_path: Path) -> None:
    measured_on = {"pool": {"train_prompts": 300}, "noise": 0.1, "batch": 64}
    results = {**measured_on, "runs": {"positive": {"random": {"0": {}}}}}
    check_mergeable(results, measured_on, tmp_path / "labels.json")
    check_mergeable({}, measured_on, tmp_path / "labels.json")  # a new file takes anything
    with pytest.raises(UserError, match="another pool or with other settings"):
        check_mergeable(results, {**measured_on, "pool": {"train_prompts": 1000}}, tmp_path)
    with pytest.raises(UserError, match="another pool or with other settings"):
        check_mergeable(results, {**measured_on, "noise": 0.3}, tmp_path)


def test_bad_reward_settings_are_refused_before_any_sampling(tmp_path: Path, capsys) -> None:
    pool = tmp_path / "pool.json"
    for flag in ("--epochs", "--learning-rate"):
        assert main([flag, "0", "--pool", str(pool), "--out", str(tmp_path / "r.json")]) == 2
        assert "need a number above 0" in capsys.readouterr().err
    assert not pool.exists()


@pytest.mark.parametrize("inputs", ["response", "pair"])
def test_a_frozen_head_learns_the_labels_direction(setup, inputs: str) -> None:
    features = FrozenFeatures(setup.backbone, inputs, TINY.max_length)
    learned = run_strategy(setup, "random", 0, [128], trainer=head_trainer(features, 0.01))
    assert learned[0].figures["accuracy"] >= 0.85

    def reversed_labels(backbone, responses, pairs, labels, *rest) -> Trained:
        return head_trainer(features, 0.01)(backbone, responses, pairs, -labels, *rest)

    # The same head on every label turned round ranks the held-out pairs the wrong way.
    wrong = run_strategy(setup, "random", 0, [128], trainer=reversed_labels)
    assert wrong[0].figures["accuracy"] <= 0.15
    # Each (prompt, response) is embedded once: the response alone is keyed by its text.
    texts = set(setup.train.texts) | set(setup.heldout.texts)
    pairs = set(zip(setup.train.prompts, setup.train.texts, strict=True)) | set(
        zip(setup.heldout.prompts, setup.heldout.texts, strict=True)
    )
    assert len(features.cache) == len(texts if inputs == "response" else pairs)
