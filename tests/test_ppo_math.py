"""PPO's arithmetic against values worked out by hand on tensors small enough to check."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from rlhf_train.policy.ppo import (
    KLController,
    PPOConfig,
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    generalized_advantages,
    kl_penalized_rewards,
    masked_whiten,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_on_a_full_response() -> None:
    # gamma 1, lambda 0.95; deltas 0.1, 0.1, 0.3 from the last token backwards.
    advantages, returns = generalized_advantages(
        t([0, 0, 1]), t([0.5, 0.6, 0.7]), t([1, 1, 1]), gamma=1.0, lam=0.95
    )
    assert advantages.tolist()[0] == pytest.approx([0.46575, 0.385, 0.3])
    assert returns.tolist()[0] == pytest.approx([0.96575, 0.985, 1.0])


def test_gae_stops_at_the_end_of_a_shorter_response() -> None:
    # The response ends at t=1: the value at t=2 (9.9, padding) must not be bootstrapped.
    advantages, returns = generalized_advantages(
        t([0, 1, 0]), t([0.5, 0.6, 9.9]), t([1, 1, 0]), gamma=1.0, lam=0.95
    )
    assert advantages.tolist()[0] == pytest.approx([0.48, 0.4, 0.0])
    assert returns.tolist()[0] == pytest.approx([0.98, 1.0, 0.0])


def test_gae_with_discounting() -> None:
    # gamma 0.9, lambda 0.8: delta1 = 2 - 1 = 1; delta0 = 0 + 0.9 * 1 - 0.5 = 0.4;
    # A0 = 0.4 + 0.72 * 1 = 1.12.
    advantages, _ = generalized_advantages(t([0, 2]), t([0.5, 1.0]), t([1, 1]), 0.9, 0.8)
    assert advantages.tolist()[0] == pytest.approx([1.12, 1.0])


def test_kl_penalty_on_every_token_and_the_score_on_the_last() -> None:
    rewards, kl = kl_penalized_rewards(
        torch.tensor([2.0]), t([-1, -2, -3]), t([-1.5, -1.5, -3]), t([1, 1, 0]), kl_coef=0.1
    )
    assert kl.tolist()[0] == pytest.approx([0.5, -0.5, 0.0])
    assert rewards.tolist()[0] == pytest.approx([-0.05, 2.05, 0.0])


def test_whitening_ignores_masked_entries() -> None:
    whitened = masked_whiten(t([1, 2, 3, 100]), t([1, 1, 1, 0]))
    assert whitened.tolist()[0] == pytest.approx([-1, 0, 1, 0], abs=1e-6)


def test_clipped_policy_loss() -> None:
    new = t([math.log(1.5), math.log(0.5)])
    old = t([0.0, 0.0])
    loss, clip_fraction, approx_kl = clipped_policy_loss(new, old, t([1.0, 1.0]), t([1, 1]), 0.2)
    # Ratio 1.5 with A=1 is clipped to 1.2; ratio 0.5 keeps -0.5 (the pessimistic bound).
    assert loss.item() == pytest.approx((-1.2 - 0.5) / 2)
    assert clip_fraction.item() == pytest.approx(0.5)
    expected_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2
    assert approx_kl.item() == pytest.approx(expected_kl)

    # With a negative advantage the larger ratio is not clipped: its loss is larger.
    loss, clip_fraction, _ = clipped_policy_loss(new[:, :1], old[:, :1], t([-1.0]), t([1]), 0.2)
    assert loss.item() == pytest.approx(1.5) and clip_fraction.item() == 0


def test_clipped_value_loss() -> None:
    loss, clip_fraction = clipped_value_loss(
        t([1.0, 0.0]), t([0.5, 0.5]), t([2.0, 0.0]), t([1, 1]), 0.2
    )
    # Clipped values 0.7 and 0.3; errors max((1-2)^2, (0.7-2)^2) and max(0, 0.09).
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)
    assert clip_fraction.item() == pytest.approx(1.0)


def test_explained_variance() -> None:
    returns, mask = t([1, 2, 3, 4]), t([1, 1, 1, 1])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0)


def test_adaptive_kl_controller_moves_towards_the_target() -> None:
    controller = KLController(PPOConfig(kl_coef=0.1, adaptive_kl=True, target_kl=6.0))
    controller.update(kl=12.0, episodes=1000)  # error clipped to +0.2, scaled by 0.1
    assert controller.value == pytest.approx(0.102)
    controller.update(kl=3.0, episodes=1000)  # error -0.5 clipped to -0.2
    assert controller.value == pytest.approx(0.102 * 0.98)
    fixed = KLController(PPOConfig(kl_coef=0.1))
    fixed.update(kl=100.0, episodes=1000)
    assert fixed.value == 0.1


def test_kl_floor_keeps_the_coefficient_at_its_start_while_the_kl_is_under_target() -> None:
    config = PPOConfig(kl_coef=0.05, adaptive_kl=True, target_kl=9.0, kl_horizon=16)
    plain, budget = KLController(config), KLController(replace(config, kl_floor=True))
    for _ in range(12):  # a run's first steps: the policy has not moved yet
        plain.update(kl=0.5, episodes=16)
        budget.update(kl=0.5, episodes=16)
    assert plain.value == pytest.approx(0.05 * 0.8**12)  # the collapse the floor prevents
    assert budget.value == 0.05
    budget.update(kl=18.0, episodes=16)  # over budget: it rises as fast as the plain rule
    assert budget.value == pytest.approx(0.06)
    budget.update(kl=0.0, episodes=16)  # falls back, but not below where it began
    assert budget.value == pytest.approx(0.05)


def test_running_moments_match_numpy_over_batches() -> None:
    moments = RunningMoments()
    data = torch.tensor([1.0, 2.0, 3.0, 10.0, -4.0, 0.5])
    for chunk in data.split([2, 3, 1]):
        moments.update(chunk)
    assert moments.mean == pytest.approx(data.mean().item())
    assert moments.std == pytest.approx(data.std(unbiased=False).item())
