"""bench/loop.py writes each run's rlhf.toml: the settings it reports are the ones the
project loads, with every lever the options set."""

from __future__ import annotations

from pathlib import Path

from bench.loop import parse_args, settings_toml
from rlhf_train.config import load_config


def _loaded(tmp_path: Path, *argv: str):
    (tmp_path / "rlhf.toml").write_text(settings_toml(parse_args(list(argv))))
    return load_config(tmp_path, environ={})


def test_the_default_run_loads_as_the_loop_measured_it(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    assert config.ppo.reference == "start"
    assert config.ppo.adaptive_kl is True and config.ppo.target_kl == 6.0
    assert config.ppo.kl_horizon == 64 and config.ppo.kl_floor is False
    assert config.ppo.missing_eos_penalty == 0.0
    assert config.evaluate.n_prompts == 128
    assert config.generation.max_new_tokens == config.optimize.max_new_tokens == 32


def test_levers_reach_the_settings(tmp_path: Path) -> None:
    config = _loaded(
        tmp_path, "--missing-eos-penalty", "1.0", "--target-kl", "0", "--reference", "parent",
        "--seed", "4", "--threads", "1", "--kl-floor",
    )  # fmt: skip
    assert config.ppo.missing_eos_penalty == 1.0
    assert config.ppo.adaptive_kl is False
    assert config.ppo.kl_floor is True
    assert config.ppo.reference == "parent"
    assert config.generation.seed == config.reward.seed == config.optimize.seed == 4
    assert config.runtime.threads == 1


def test_each_evaluated_policy_keeps_its_first_samples(tmp_path: Path) -> None:
    import json

    from bench.loop import SAMPLES_KEPT, sample_responses

    for folder, policy in (("base-1", "base"), ("policy-r1-vs-base-2", "policy-r1")):
        (tmp_path / "reports" / "policies" / folder).mkdir(parents=True)
        samples = [
            {"prompt": f"p{i}", "policy_response": f"{policy} {i}", "policy_words": 2.0,
             "against_response": "other", "against_score": 0.0}
            for i in range(SAMPLES_KEPT + 3)
        ]  # fmt: skip
        report = {"policy": policy, "samples": samples}
        (tmp_path / "reports" / "policies" / folder / "report.json").write_text(json.dumps(report))
    kept = sample_responses(tmp_path)
    assert sorted(kept) == ["base", "policy-r1"]
    assert len(kept["policy-r1"]) == SAMPLES_KEPT
    assert kept["policy-r1"][0] == {"prompt": "p0", "response": "policy-r1 0", "words": 2.0}
