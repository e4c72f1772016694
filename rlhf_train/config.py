"""Workspace configuration: rlhf.toml, then RLHF_* environment variables, then CLI flags.

Every key is declared in a dataclass below with its type and default; anything else is
an error that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rlhf_train.errors import UserError
from rlhf_train.judges import JUDGE_NAMES

CONFIG_FILE = "rlhf.toml"


@dataclass(frozen=True)
class DatabaseConfig:
    # Empty means the SQLite file inside the workspace.
    url: str = ""


@dataclass(frozen=True)
class ModelsConfig:
    policy: str = "smollm2-135m-instruct"
    reward_backbone: str = "minilm-l6-v2"


@dataclass(frozen=True)
class PromptsConfig:
    builtin: str = "imdb"
    n: int = 2000
    words: int = 8
    eval_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class GenerationConfig:
    n_prompts: int = 32
    samples_per_prompt: int = 2
    batch_size: int = 16
    max_new_tokens: int = 48
    temperature: float = 0.9
    top_p: float = 1.0
    seed: int = 0
    # Share of a two-policy round's prompts whose pairs are new-vs-previous.
    previous_fraction: float = 0.5
    # How new-vs-new pairs are chosen among a prompt's samples: "random", or
    # "uncertainty" (the pair the reward model is least sure about; samples_per_prompt
    # is then the number of candidates K scored per prompt).
    pair_strategy: str = "random"


@dataclass(frozen=True)
class RoundConfig:
    overlap: int = 3
    gold_rate: float = 0.0


@dataclass(frozen=True)
class ServeConfig:
    port: int = 8501
    address: str = "localhost"


@dataclass(frozen=True)
class RuntimeConfig:
    # 0: one thread per core this process may use.
    threads: int = 0
    # "auto": the first CUDA GPU when there is one, else the CPU; or "cpu", "cuda:1"...
    device: str = "auto"


@dataclass(frozen=True)
class SftSettings:
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 8
    max_length: int = 256
    # Share of the demonstrations held out for eval loss and perplexity.
    eval_fraction: float = 0.05
    # How many reviews `--builtin imdb` uses.
    builtin_n: int = 2000
    checkpoint_every: int = 200
    seed: int = 0


@dataclass(frozen=True)
class RewardSettings:
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 16
    # Tokens per (prompt, response); longer inputs keep their end, where the response is.
    max_length: int = 128
    # Weight of the penalty that keeps rewards centred on 0; 0 turns it off.
    center_coefficient: float = 0.0
    checkpoint_every: int = 200
    seed: int = 0


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # Comma-separated module names, "all-linear", or "auto" (peft's choice per architecture).
    target_modules: str = "auto"


@dataclass(frozen=True)
class OptimizeSettings:
    """What PPO, DPO, RLOO and GRPO share; `rlhf train ppo|dpo|rloo|grpo` read it."""

    # Optimizer steps (PPO, RLOO, GRPO: one rollout each; DPO: one batch of pairs).
    steps: int = 100
    learning_rate: float = 1e-5
    # Prompts per process per step (PPO, RLOO, GRPO) or pairs per step (DPO).
    batch_size: int = 16
    max_new_tokens: int = 48
    temperature: float = 1.0
    # PPO's and RLOO/GRPO's KL coefficient; DPO's beta.
    kl_coef: float = 0.05
    checkpoint_every: int = 50
    # Every this many steps, a table of sample responses goes to the log and terminal.
    samples_every: int = 10
    seed: int = 0


@dataclass(frozen=True)
class PpoSettings:
    ppo_epochs: int = 4
    minibatch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    value_coef: float = 0.1
    whiten_advantages: bool = True
    # "shared": a value head on the policy's trunk; "separate": the critic has its own copy.
    value_model: str = "shared"
    adaptive_kl: bool = False
    target_kl: float = 6.0
    kl_horizon: int = 10000
    # Stop when the KL to the reference passes this (nats per response); 0: never.
    kl_limit: float = 0.0
    # Subtracted from the score of a response without an end token; 0: no penalty.
    missing_eos_penalty: float = 1.0
    normalize_rewards: bool = True
    # Scores are clipped to +- this after normalization; 0: no clipping.
    reward_clip: float = 0.0


@dataclass(frozen=True)
class DpoSettings:
    max_length: int = 256
    # Passes over the export's train split when optimize.steps does not stop it first.
    epochs: float = 1.0


@dataclass(frozen=True)
class GroupSettings:
    """RLOO and GRPO sample several responses per prompt and compare them."""

    num_generations: int = 4


@dataclass(frozen=True)
class LoopSettings:
    """`rlhf round next` and the app's "Start retraining"."""

    # ppo, dpo, rloo or grpo.
    optimizer: str = "ppo"
    # Export the judgments of every closed round (true) or of the closed round only.
    cumulative: bool = True
    # Judgments (not counting skips) the closed round needs before it retrains.
    min_judgments: int = 1
    # Start the reward model from the previous round's reward model (true) or from
    # models.reward_backbone (false).
    continue_reward: bool = True
    # Prompts in the next round (0: generation.n_prompts).
    next_prompts: int = 0


@dataclass(frozen=True)
class EvaluateSettings:
    """`rlhf evaluate policy`, also run by every retraining."""

    # Held-out (eval split) prompts the policies answer; the same ones every time.
    n_prompts: int = 64
    max_new_tokens: int = 48
    temperature: float = 0.9
    # Comma-separated judge functions: sentiment (lexicon score), words; or "" for none.
    judges: str = "sentiment"
    seed: int = 0


@dataclass(frozen=True)
class WorkerSettings:
    """`rlhf worker`."""

    # Seconds between queue polls when idle, and between heartbeats while running.
    poll_seconds: float = 5.0
    heartbeat_seconds: float = 10.0
    # A running run without a heartbeat for this long is marked failed.
    stale_after_seconds: float = 120.0


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    round: RoundConfig = field(default_factory=RoundConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sft: SftSettings = field(default_factory=SftSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optimize: OptimizeSettings = field(default_factory=OptimizeSettings)
    ppo: PpoSettings = field(default_factory=PpoSettings)
    dpo: DpoSettings = field(default_factory=DpoSettings)
    group: GroupSettings = field(default_factory=GroupSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)


def _positive(value: float) -> bool:
    return value > 0


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


# key -> (check, what the value must be)
_CHECKS: dict[str, tuple[Any, str]] = {
    "prompts.n": (_positive, "at least 1"),
    "prompts.words": (_positive, "at least 1"),
    "prompts.eval_fraction": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "generation.n_prompts": (_positive, "at least 1"),
    "generation.samples_per_prompt": (lambda v: v >= 2, "at least 2"),
    "generation.batch_size": (_positive, "at least 1"),
    "generation.max_new_tokens": (_positive, "at least 1"),
    "generation.temperature": (_positive, "above 0"),
    "generation.top_p": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    "generation.previous_fraction": (_fraction, "between 0 and 1"),
    "generation.pair_strategy": (
        lambda v: v in ("random", "uncertainty"),
        "random or uncertainty",
    ),
    "round.overlap": (_positive, "at least 1"),
    "round.gold_rate": (_fraction, "between 0 and 1"),
    "serve.port": (lambda v: 0 < v < 65536, "a port number from 1 to 65535"),
    "sft.epochs": (_positive, "above 0"),
    "sft.learning_rate": (_positive, "above 0"),
    "sft.batch_size": (_positive, "at least 1"),
    "sft.max_length": (lambda v: v >= 8, "at least 8"),
    "sft.eval_fraction": (lambda v: 0 < v < 1, "above 0 and below 1"),
    "sft.builtin_n": (lambda v: v >= 2, "at least 2"),
    "sft.checkpoint_every": (_positive, "at least 1"),
    "reward.epochs": (_positive, "above 0"),
    "reward.learning_rate": (_positive, "above 0"),
    "reward.batch_size": (_positive, "at least 1"),
    "reward.max_length": (lambda v: v >= 8, "at least 8"),
    "reward.center_coefficient": (lambda v: v >= 0, "0 or more"),
    "reward.checkpoint_every": (_positive, "at least 1"),
    "lora.rank": (_positive, "at least 1"),
    "lora.alpha": (_positive, "at least 1"),
    "lora.dropout": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "lora.target_modules": (lambda v: bool(v.strip()), "auto, all-linear or module names"),
    "optimize.steps": (_positive, "at least 1"),
    "optimize.learning_rate": (_positive, "above 0"),
    "optimize.batch_size": (_positive, "at least 1"),
    "optimize.max_new_tokens": (_positive, "at least 1"),
    "optimize.temperature": (_positive, "above 0"),
    "optimize.kl_coef": (lambda v: v >= 0, "0 or more"),
    "optimize.checkpoint_every": (_positive, "at least 1"),
    "optimize.samples_every": (_positive, "at least 1"),
    "ppo.ppo_epochs": (_positive, "at least 1"),
    "ppo.minibatch_size": (_positive, "at least 1"),
    "ppo.gradient_accumulation_steps": (_positive, "at least 1"),
    "ppo.max_grad_norm": (_positive, "above 0"),
    "ppo.gamma": (_fraction, "between 0 and 1"),
    "ppo.lam": (_fraction, "between 0 and 1"),
    "ppo.clip_range": (_positive, "above 0"),
    "ppo.clip_range_value": (_positive, "above 0"),
    "ppo.value_coef": (lambda v: v >= 0, "0 or more"),
    "ppo.value_model": (lambda v: v in ("shared", "separate"), "shared or separate"),
    "ppo.target_kl": (_positive, "above 0"),
    "ppo.kl_horizon": (_positive, "at least 1"),
    "ppo.kl_limit": (lambda v: v >= 0, "0 (no limit) or more"),
    "ppo.missing_eos_penalty": (lambda v: v >= 0, "0 (no penalty) or more"),
    "ppo.reward_clip": (lambda v: v >= 0, "0 (no clipping) or more"),
    "dpo.max_length": (lambda v: v >= 8, "at least 8"),
    "dpo.epochs": (_positive, "above 0"),
    "group.num_generations": (lambda v: v >= 2, "at least 2"),
    "loop.optimizer": (lambda v: v in ("ppo", "dpo", "rloo", "grpo"), "ppo, dpo, rloo or grpo"),
    "loop.min_judgments": (lambda v: v >= 1, "at least 1"),
    "loop.next_prompts": (lambda v: v >= 0, "0 (generation.n_prompts) or more"),
    "evaluate.n_prompts": (_positive, "at least 1"),
    "evaluate.max_new_tokens": (_positive, "at least 1"),
    "evaluate.temperature": (_positive, "above 0"),
    "evaluate.judges": (
        lambda v: all(j.strip() in JUDGE_NAMES for j in v.split(",") if j.strip()),
        f'a comma-separated list of {" and ".join(JUDGE_NAMES)}, or ""',
    ),
    "worker.poll_seconds": (_positive, "above 0"),
    "worker.heartbeat_seconds": (_positive, "above 0"),
    "worker.stale_after_seconds": (_positive, "above 0"),
    "runtime.threads": (lambda v: v >= 0, "0 (automatic) or more"),
    "runtime.device": (
        lambda v: v in ("auto", "cpu", "mps") or v.split(":")[0] == "cuda",
        "auto, cpu, mps, cuda or cuda:N",
    ),
}


def _coerce(key: str, value: Any, expected: type, origin: str) -> Any:
    """`value` as `expected`; strings (from the environment) are parsed."""
    if isinstance(value, str) and expected is not str:
        text = value.strip().lower()
        try:
            if expected is bool:
                if text not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError
                return text in ("1", "true", "yes")
            return expected(text)
        except ValueError:
            raise UserError(
                f"Setting {key} in {origin} is {value!r}, not a {expected.__name__}; fix it there."
            ) from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise UserError(
            f"Setting {key} in {origin} is {value!r}, not a {expected.__name__}; fix it there."
        )
    return value


def _finite(key: str, value: Any, origin: str) -> Any:
    # TOML, float() and argparse all accept inf and nan, and no setting means either:
    # inf passes the "above 0" checks, and nan fails a range check for the wrong reason.
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(
            f"Setting {key} in {origin} is {value!r}, not a finite number; fix it there."
        )
    return value


def _apply(config: Config, key: str, value: Any, origin: str) -> Config:
    section_name, _, name = key.partition(".")
    section = getattr(config, section_name, None) if section_name in _section_names() else None
    if section is None or name not in {f.name for f in fields(section)}:
        raise UserError(
            f"Unknown setting {key!r} in {origin}; known settings are: {', '.join(known_keys())}."
        )
    expected = {f.name: f.type for f in fields(section)}[name]
    expected_type = {"str": str, "int": int, "float": float, "bool": bool}[str(expected)]
    coerced = _finite(key, _coerce(key, value, expected_type, origin), origin)
    check = _CHECKS.get(key)
    if check is not None and not check[0](coerced):
        raise UserError(f"Setting {key} in {origin} is {coerced!r}; it must be {check[1]}.")
    return replace(config, **{section_name: replace(section, **{name: coerced})})


def _section_names() -> list[str]:
    return [f.name for f in fields(Config)]


def known_keys() -> list[str]:
    return [
        f"{section.name}.{item.name}"
        for section in fields(Config)
        for item in fields(section.default_factory())
    ]


def _flatten(table: Mapping[str, Any], origin: str) -> dict[str, Any]:
    flat = {}
    for section, values in table.items():
        if not isinstance(values, Mapping):
            raise UserError(
                f"{origin} has {section!r} outside a [section]; put each setting under its "
                f"section, e.g. [generation] for generation.batch_size."
            )
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    if environ.get("RLHF_DB_URL"):
        values["database.url"] = environ["RLHF_DB_URL"]
    for key in known_keys():
        variable = "RLHF_" + key.replace(".", "_").upper()
        if variable in environ:
            values[key] = environ[variable]
    return values


def load_config(
    workspace: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then `workspace/rlhf.toml`, then RLHF_* variables, then `overrides`."""
    config = Config()
    path = workspace / CONFIG_FILE
    if path.exists():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is not valid TOML ({exc}); fix the file or delete it."
            ) from exc
        for key, value in _flatten(table, str(path)).items():
            config = _apply(config, key, value, str(path))
    for key, value in _from_environment(os.environ if environ is None else environ).items():
        variable = (
            "RLHF_DB_URL" if key == "database.url" else "RLHF_" + key.replace(".", "_").upper()
        )
        config = _apply(config, key, value, f"the environment variable {variable}")
    for key, value in (overrides or {}).items():
        if value is not None:
            config = _apply(config, key, value, "the command line")
    return config


def default_config_text() -> str:
    """The rlhf.toml that `rlhf init` writes: every setting with its default, commented."""
    lines = [
        "# prefloop workspace settings. Uncomment to change a default.",
        "# Environment variables override this file: RLHF_<SECTION>_<KEY>, e.g.",
        "# RLHF_GENERATION_BATCH_SIZE=8, and RLHF_DB_URL for [database] url.",
    ]
    defaults = Config()
    for section in fields(Config):
        lines.append("")
        lines.append(f"[{section.name}]")
        for item in fields(section.default_factory()):
            value = getattr(getattr(defaults, section.name), item.name)
            rendered = f'"{value}"' if isinstance(value, str) else str(value).lower()
            lines.append(f"# {item.name} = {rendered}")
    return "\n".join(lines) + "\n"
