"""bench/optimize.py's variants train with the settings their names promise."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def optimize() -> ModuleType:
    # The benchmarks run as scripts, with bench/ first on the path (`from common import`).
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("optimize")
    finally:
        sys.path.remove(str(BENCH))


def test_top_block_variants_share_the_adapter_and_scale_only_their_rate(optimize) -> None:
    def overrides(name: str) -> dict:
        return optimize.method_overrides(optimize.DEFAULTS, optimize.METHODS[name])

    plain, faster, rloo = (
        overrides("ppo-lora-top"),
        overrides("ppo-lora-top-lr2"),
        overrides("rloo-lora-top"),
    )
    top = optimize.TOP_BLOCKS
    assert plain["lora.layers"] == faster["lora.layers"] == rloo["lora.layers"] == top
    assert plain["optimize.learning_rate"] == rloo["optimize.learning_rate"]
    assert faster["optimize.learning_rate"] == 2 * optimize.DEFAULTS.lora_learning_rate
    # Besides the rate, the same run: same update, steps and sampling.
    rate = "optimize.learning_rate"
    assert {k: v for k, v in faster.items() if k != rate} == {
        k: v for k, v in plain.items() if k != rate
    }
    paired = optimize.PAIRED
    assert paired["ppo-lora-top-lr2"] == paired["ppo-lora-top"] == ("ppo-lora-e4", "rloo-lora-top")
    assert overrides("ppo")[rate] == optimize.DEFAULTS.learning_rate
    assert "lora.layers" not in overrides("ppo-lora")


def test_value_rate_variants_change_only_the_value_heads_rate(optimize) -> None:
    for name in ("ppo", "ppo-e1"):
        base = optimize.method_overrides(optimize.DEFAULTS, optimize.METHODS[name])
        faster = optimize.method_overrides(optimize.DEFAULTS, optimize.METHODS[f"{name}-v10"])
        assert "ppo.value_learning_rate" not in base
        assert faster.pop("ppo.value_learning_rate") == 10 * optimize.DEFAULTS.learning_rate
        assert faster == base
        assert optimize.PAIRED[f"{name}-v10"] == optimize.PAIRED[name] == ("ppo-e4", "rloo")
