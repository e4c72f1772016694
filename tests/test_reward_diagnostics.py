"""Reward model diagnostics: accuracy and its buckets, the length-bias check, Bradley-Terry
calibration, JSON safety, and that the plots are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlhf_train.reward.diagnostics import reward_diagnostics
from rlhf_train.reward.plots import write_reward_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pairs(chosen, rejected, *, lengths=None, agreement=None, margin=None, seed=0):
    """Diagnostics with neutral defaults for whatever a test does not care about."""
    chosen = np.asarray(chosen, dtype=float)
    rejected = np.asarray(rejected, dtype=float)
    n = len(chosen)
    chosen_lengths, rejected_lengths = lengths if lengths is not None else (np.full(n, 10),) * 2
    return reward_diagnostics(
        chosen,
        rejected,
        np.asarray(chosen_lengths),
        np.asarray(rejected_lengths),
        np.ones(n) if agreement is None else np.asarray(agreement, dtype=float),
        np.full(n, 2.0) if margin is None else np.asarray(margin, dtype=float),
        seed=seed,
    )


def _mixed_inputs(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    agreement = rng.choice([1.0, 0.75, 0.5], size=n)
    return {
        "chosen_rewards": rng.normal(0.5, 1.0, n),
        "rejected_rewards": rng.normal(0.0, 1.0, n),
        "chosen_lengths": rng.integers(5, 200, n),
        "rejected_lengths": rng.integers(5, 200, n),
        "agreement": agreement,
        "margin": agreement * rng.uniform(1, 3, n),
    }


def _by_label(buckets: list[dict]) -> dict[str, dict]:
    return {bucket["bucket"]: bucket for bucket in buckets}


def test_perfectly_separating_reward_is_always_right() -> None:
    inputs = _mixed_inputs(300)
    inputs["chosen_rewards"] = np.abs(inputs["chosen_rewards"]) + 1.0
    inputs["rejected_rewards"] = -np.abs(inputs["rejected_rewards"])
    result = reward_diagnostics(**inputs)
    assert result["n_pairs"] == 300
    assert result["accuracy"] == 1.0
    assert result["mean_reward_gap"] > 1.0
    buckets = result["by_agreement"] + result["by_strength"]
    assert all(b["accuracy"] == 1.0 for b in buckets if b["n"])
    assert sum(b["n"] for b in result["by_agreement"]) == 300


def test_reversed_reward_is_always_wrong() -> None:
    result = _pairs([0.0, -1.0, 2.0], [1.0, 0.0, 3.0])
    assert result["accuracy"] == 0.0
    assert result["mean_reward_gap"] == pytest.approx(-1.0)
    assert all(b["accuracy"] in (0.0, None) for b in result["by_agreement"])


def test_ties_count_half() -> None:
    assert _pairs([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])["accuracy"] == 0.5
    assert _pairs([2.0, 1.0], [1.0, 1.0])["accuracy"] == 0.75


def test_agreement_buckets() -> None:
    # Right on the unanimous pair only, so each bucket's accuracy shows which pair it got.
    result = _pairs([1.0, 0.0, 0.0], [0.0, 1.0, 1.0], agreement=[1.0, 0.75, 0.5])
    buckets = result["by_agreement"]
    assert [b["bucket"] for b in buckets] == ["unanimous", "clear majority", "narrow majority"]
    assert [b["n"] for b in buckets] == [1, 1, 1]
    assert [b["accuracy"] for b in buckets] == [1.0, 0.0, 0.0]

    # Boundaries: averaging can give 0.9999..., and exactly 2/3 is a clear majority.
    edges = _pairs([1.0] * 4, [0.0] * 4, agreement=[0.9995, 2 / 3, 0.66, 1.0])
    assert [b["n"] for b in edges["by_agreement"]] == [2, 1, 1]


def test_agreement_buckets_always_listed() -> None:
    result = _pairs([1.0, 2.0], [0.0, 0.0], agreement=[1.0, 1.0])
    assert [b["bucket"] for b in result["by_agreement"]] == [
        "unanimous",
        "clear majority",
        "narrow majority",
    ]
    assert _by_label(result["by_agreement"])["narrow majority"] == {
        "bucket": "narrow majority",
        "n": 0,
        "accuracy": None,
    }


def test_strength_buckets_use_margin_over_agreement() -> None:
    agreement = np.array([0.5, 0.75, 1.0, 0.0])
    strength = np.array([1.0, 2.0, 3.0, 2.0])
    result = _pairs(
        [0.0, 1.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 0.0],
        agreement=agreement,
        margin=agreement * strength,
    )
    buckets = result["by_strength"]
    assert [b["bucket"] for b in buckets] == ["slightly", "clearly", "much"]
    # The pair with agreement 0 has no strength and is left out.
    assert [b["n"] for b in buckets] == [1, 1, 1]
    assert [b["accuracy"] for b in buckets] == [0.0, 1.0, 0.0]

    edges = _pairs([1.0] * 3, [0.0] * 3, agreement=[1.0] * 3, margin=[1.49, 1.5, 2.5])
    assert [b["n"] for b in edges["by_strength"]] == [1, 1, 1]


def test_reward_equal_to_length_raises_the_alarm() -> None:
    rng = np.random.default_rng(3)
    chosen_lengths = rng.integers(10, 300, 200)
    rejected_lengths = rng.integers(10, 300, 200)
    result = _pairs(
        chosen_lengths.astype(float),
        rejected_lengths.astype(float),
        lengths=(chosen_lengths, rejected_lengths),
    )
    length = result["length"]
    assert length["reward_length_correlation"] == pytest.approx(1.0)
    assert length["reward_length_spearman"] == pytest.approx(1.0)
    assert length["alarm"] is True
    assert "length" in length["message"]
    # A model that is pure length is exactly the longer-wins baseline.
    assert length["longer_wins_accuracy"] == pytest.approx(result["accuracy"])


def test_good_model_with_length_baseline_raises_no_alarm() -> None:
    rng = np.random.default_rng(4)
    n = 400
    result = _pairs(
        rng.normal(2.0, 1.0, n),
        rng.normal(0.0, 1.0, n),
        lengths=(rng.integers(10, 300, n), rng.integers(10, 300, n)),
    )
    length = result["length"]
    assert abs(length["reward_length_correlation"]) < 0.2
    assert length["alarm"] is False
    assert length["message"].startswith("No sign of a length bias")


def test_alarm_when_model_no_better_than_longer_wins() -> None:
    # Chosen is longer in 3 of 4 pairs and tied in one: baseline 0.875. Rewards are not
    # length (r is small) but the model only gets 3 of 4 right.
    result = _pairs(
        [1.0, 1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
        lengths=([30, 12, 50, 7], [20, 11, 5, 7]),
    )
    length = result["length"]
    assert length["longer_wins_accuracy"] == 0.875
    assert result["accuracy"] == 0.75
    assert abs(length["reward_length_correlation"]) < 0.5
    assert length["alarm"] is True


def test_longer_wins_accuracy_on_hand_made_lengths() -> None:
    result = _pairs(
        [1.0] * 4,
        [0.0] * 4,
        lengths=([10, 5, 7, 100], [3, 9, 7, 100]),
    )
    # Longer, shorter, equal, equal.
    assert result["length"]["longer_wins_accuracy"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)


def test_spearman_with_ties_matches_hand_computation() -> None:
    # Pooled rewards [1, 2, 2, 3] and lengths [10, 20, 30, 30].
    # Ranks with ties averaged: rewards [1, 2.5, 2.5, 4], lengths [1, 2, 3.5, 3.5].
    # Deviations from the mean rank 2.5: [-1.5, 0, 0, 1.5] and [-1.5, -0.5, 1, 1], so
    # rho = 3.75 / sqrt(4.5 * 4.5) = 0.8333.
    result = _pairs(
        [1.0, 2.0],
        [2.0, 3.0],
        lengths=([10, 20], [30, 30]),
    )
    assert result["length"]["reward_length_spearman"] == pytest.approx(3.75 / 4.5)


def test_correlation_of_constant_lengths_is_none() -> None:
    result = _pairs([1.0, 2.0], [0.0, 0.5], lengths=([8, 8], [8, 8]))
    assert result["length"]["reward_length_correlation"] is None
    assert result["length"]["reward_length_spearman"] is None
    assert "r undefined" in result["length"]["message"]


def _bradley_terry_pairs(n: int, scale: float, seed: int = 5) -> dict:
    """Pairs whose outcomes really follow sigmoid(reward gap), with rewards scaled by
    `scale` afterwards (scale 1 is calibrated, larger is overconfident)."""
    rng = np.random.default_rng(seed)
    gap = rng.normal(0.0, 1.5, n)
    a_preferred = rng.random(n) < 1 / (1 + np.exp(-gap))
    reward_a, reward_b = gap / 2, -gap / 2
    chosen = np.where(a_preferred, reward_a, reward_b) * scale
    rejected = np.where(a_preferred, reward_b, reward_a) * scale
    return _pairs(chosen, rejected)


def test_calibrated_rewards_have_small_ece_and_scaled_ones_do_not() -> None:
    calibrated = _bradley_terry_pairs(20_000, scale=1.0)["calibration"]
    overconfident = _bradley_terry_pairs(20_000, scale=10.0)["calibration"]
    assert calibrated["ece"] < 0.05
    assert overconfident["ece"] > 0.15
    assert overconfident["ece"] > 3 * calibrated["ece"]
    assert overconfident["log_loss"] > calibrated["log_loss"]

    bins = calibrated["bins"]
    assert len(bins) == 10
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert sum(b["n"] for b in bins) == 20_000
    # The random orientation puts both outcomes in play: low bins mostly lose, high ones win.
    assert bins[0]["observed_rate"] < 0.2 < 0.8 < bins[-1]["observed_rate"]


def test_calibration_survives_huge_reward_gaps() -> None:
    result = _pairs([1e4, -1e4], [-1e4, 1e4])
    calibration = result["calibration"]
    assert np.isfinite(calibration["log_loss"])
    assert calibration["log_loss"] == pytest.approx(1e4, rel=1e-6)
    assert calibration["ece"] == pytest.approx(0.5)


def test_calibration_orientation_depends_on_seed_only() -> None:
    inputs = _mixed_inputs(200)
    assert reward_diagnostics(**inputs, seed=7) == reward_diagnostics(**inputs, seed=7)
    a = reward_diagnostics(**inputs, seed=7)["calibration"]["bins"]
    b = reward_diagnostics(**inputs, seed=8)["calibration"]["bins"]
    assert [x["n"] for x in a] != [x["n"] for x in b]


def test_distribution_stats_and_histogram() -> None:
    result = _pairs([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 10.0])
    distribution = result["distribution"]
    assert distribution["chosen"] == {
        "mean": 3.0,
        "std": pytest.approx(np.sqrt(2.0)),
        "min": 1.0,
        "p25": 2.0,
        "median": 3.0,
        "p75": 4.0,
        "max": 5.0,
    }
    histogram = distribution["histogram"]
    assert len(histogram["edges"]) in (11, 21)
    assert histogram["edges"][0] == 0.0 and histogram["edges"][-1] == 10.0
    assert sum(histogram["chosen"]) == 5 and sum(histogram["rejected"]) == 5
    assert len(histogram["chosen"]) == len(histogram["edges"]) - 1


def test_constant_rewards_still_get_a_histogram() -> None:
    histogram = _pairs([1.0, 1.0], [1.0, 1.0])["distribution"]["histogram"]
    assert histogram["edges"][0] < 1.0 < histogram["edges"][-1]
    assert sum(histogram["chosen"]) == 2


def _assert_plain_json(value) -> None:
    if isinstance(value, dict):
        assert all(isinstance(key, str) for key in value)
        for item in value.values():
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


@pytest.mark.parametrize("n", [1, 3, 500])
def test_result_is_strict_json(n: int) -> None:
    result = reward_diagnostics(**_mixed_inputs(n))
    _assert_plain_json(result)
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_degenerate_input_is_still_strict_json() -> None:
    # Constant everything: correlations and most buckets are undefined, never NaN.
    result = _pairs([0.0] * 3, [0.0] * 3, agreement=[0.0] * 3, margin=[0.0] * 3)
    json.dumps(result, allow_nan=False)
    assert [b["n"] for b in result["by_strength"]] == [0, 0, 0]


def test_mismatched_lengths_raise() -> None:
    inputs = _mixed_inputs(10)
    inputs["rejected_rewards"] = inputs["rejected_rewards"][:9]
    with pytest.raises(ValueError, match="one entry per pair"):
        reward_diagnostics(**inputs)


def test_empty_input_raises() -> None:
    empty = np.array([])
    with pytest.raises(ValueError, match="empty"):
        reward_diagnostics(empty, empty, empty, empty, empty, empty)


def test_nan_reward_raises() -> None:
    inputs = _mixed_inputs(5)
    inputs["chosen_rewards"][2] = np.nan
    with pytest.raises(ValueError, match="chosen_rewards"):
        reward_diagnostics(**inputs)


def _assert_pngs(paths: list[Path], folder: Path) -> None:
    assert [p.name for p in paths] == [
        "calibration.png",
        "reward_distribution.png",
        "accuracy_by_bucket.png",
    ]
    for path in paths:
        assert path.parent == folder
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_SIGNATURE)


def test_plots_are_written(tmp_path: Path) -> None:
    folder = tmp_path / "plots" / "round1"  # does not exist yet
    diagnostics = reward_diagnostics(**_mixed_inputs(300))
    _assert_pngs(write_reward_plots(diagnostics, folder), folder)


def test_plots_with_empty_buckets_and_from_json(tmp_path: Path) -> None:
    # All unanimous and all "much": four of six buckets are empty. Going through JSON is
    # how a saved report would be plotted later.
    inputs = _mixed_inputs(50)
    inputs["agreement"] = np.ones(50)
    inputs["margin"] = np.full(50, 3.0)
    diagnostics = json.loads(json.dumps(reward_diagnostics(**inputs)))
    _assert_pngs(write_reward_plots(diagnostics, tmp_path), tmp_path)


def test_plots_with_a_whole_bucket_group_empty(tmp_path: Path) -> None:
    diagnostics = _pairs([1.0, 0.0], [0.0, 1.0], agreement=[0.0, 0.0], margin=[0.0, 0.0])
    assert all(b["n"] == 0 for b in diagnostics["by_strength"])
    _assert_pngs(write_reward_plots(diagnostics, tmp_path), tmp_path)
