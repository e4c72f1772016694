"""PPOConfig is built from the workspace's [optimize] and [ppo] settings, with no default
of its own: PPOConfig() is what a fresh rlhf.toml gives, field for field."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace

from rlhf_train.config import OptimizeSettings, PpoSettings, load_config, setting_field
from rlhf_train.policy.ppo import PPOConfig
from rlhf_train.policy.ppo_runner import ppo_config


def test_every_ppo_config_field_is_a_setting_of_the_same_type() -> None:
    for item in fields(PPOConfig):
        key = item.metadata["setting"]
        assert key.split(".")[0] in ("optimize", "ppo"), item.name
        declared = setting_field(key)
        assert declared is not None, key
        assert str(item.type).removesuffix(" | None") == str(declared.type), item.name


def test_ppo_config_defaults_are_the_workspace_defaults() -> None:
    assert PPOConfig() == PPOConfig.from_settings(OptimizeSettings(), PpoSettings())
    # They disagreed once: the setting said true, PPOConfig false.
    assert PPOConfig().normalize_rewards is True
    assert PPOConfig().kl_limit is None and PPOConfig().reward_clip is None


def test_settings_map_onto_ppo_config_with_zero_meaning_off() -> None:
    config = PPOConfig.from_settings(
        OptimizeSettings(batch_size=32, kl_coef=0.2, seed=7, temperature=0.7),
        PpoSettings(
            minibatch_size=4, kl_limit=0.0, reward_clip=2.5, missing_eos_penalty=0.0, lam=0.9
        ),
    )
    assert (config.rollout_batch_size, config.kl_coef, config.seed) == (32, 0.2, 7)
    assert (config.temperature, config.minibatch_size, config.lam) == (0.7, 4, 0.9)
    assert config.kl_limit is None and config.missing_eos_penalty is None
    assert config.reward_clip == 2.5


def test_the_cli_path_reads_the_workspace_settings(tmp_path) -> None:
    (tmp_path / "rlhf.toml").write_text(
        "[optimize]\nbatch_size = 24\n[ppo]\nnormalize_rewards = false\nkl_limit = 3.0\n"
    )
    # `steps`: the run's length (--max-steps or optimize.steps), which the schedule spans.
    job = SimpleNamespace(config=load_config(tmp_path, environ={}), steps=7)
    config = ppo_config(job)
    assert config.rollout_batch_size == 24 and config.steps == 7
    assert config.normalize_rewards is False and config.kl_limit == 3.0
    default = ppo_config(
        SimpleNamespace(config=load_config(tmp_path / "none", environ={}), steps=100)
    )
    assert default.normalize_rewards is True  # what `rlhf train ppo` has always used
