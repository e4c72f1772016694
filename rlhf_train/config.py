"""Workspace configuration: rlhf.toml, then RLHF_* environment variables, then CLI flags.

Every key is declared once, as a field of a section dataclass below, by `setting()`: its
type, its default, its help and the check its value must pass. Validation, the rlhf.toml
that `rlhf init` writes and the help of the command-line flags that override a key all
read that one declaration, so a check cannot name a key that does not exist and the help
cannot drift from the default. Any key not declared is an error that names it, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from rlhf_train.errors import UserError
from rlhf_train.judges import JUDGE_NAMES

CONFIG_FILE = "rlhf.toml"


class Check(NamedTuple):
    """A rule a setting's value must pass, and what it must be, as in "it must be ..."."""

    test: Callable[[Any], bool]
    must_be: str


def setting(default: Any, help: str, check: Check | None = None) -> Any:
    """A section field: its default, its help (one phrase, shown in rlhf.toml and in the
    flags' help) and its check (None: any value of the field's type)."""
    return field(default=default, metadata={"help": help, "check": check})


def _positive(value: float) -> bool:
    return value > 0


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


def _at_least(bound: int) -> Check:
    return Check(lambda v: v >= bound, f"at least {bound}")


AT_LEAST_1 = Check(_positive, "at least 1")
ABOVE_0 = Check(_positive, "above 0")
BETWEEN_0_AND_1 = Check(_fraction, "between 0 and 1")
ZERO_OR_MORE = Check(lambda v: v >= 0, "0 or more")
SEED = "random seed: the same seed gives the same result"


@dataclass(frozen=True)
class DatabaseSettings:
    """Where judgments, rounds, models and runs are stored."""

    url: str = setting(
        "",
        "SQLAlchemy URL of the database: sqlite:///PATH or "
        "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; empty means the SQLite file "
        "prefloop.db inside the workspace; RLHF_DB_URL also sets it",
    )


@dataclass(frozen=True)
class ModelsSettings:
    """The models a new workspace starts from."""

    policy: str = setting(
        "smollm2-135m-instruct",
        "the first policy: a built-in name, a registered name, a model folder or a hub id",
    )
    reward_backbone: str = setting(
        "minilm-l6-v2",
        "the network a new reward model is trained from: minilm-l6-v2, policy (the "
        "current policy with a scalar head), a folder or a hub id",
    )


@dataclass(frozen=True)
class PromptsSettings:
    """The built-in prompts `rlhf up` imports into an empty workspace."""

    builtin: str = setting("imdb", "the built-in prompt set: imdb or rotten_tomatoes")
    n: int = setting(2000, "how many prompts to import", AT_LEAST_1)
    words: int = setting(8, "words per prompt (the start of a review)", AT_LEAST_1)
    eval_fraction: float = setting(
        0.1,
        "share of the prompts held out for evaluation, chosen by a hash of their text",
        Check(lambda v: 0 <= v < 1, "at least 0 and below 1"),
    )
    seed: int = setting(0, "random seed of which reviews are drawn")


@dataclass(frozen=True)
class GenerationSettings:
    """`rlhf generate`: the responses of a new round and how they are paired."""

    n_prompts: int = setting(32, "prompts in a new round", AT_LEAST_1)
    samples_per_prompt: int = setting(
        2,
        "responses sampled per prompt, K; with pair_strategy uncertainty, the candidates "
        "the reward model scores per prompt",
        _at_least(2),
    )
    batch_size: int = setting(
        16, "sequences per generate call; lower it when memory runs out", AT_LEAST_1
    )
    max_new_tokens: int = setting(48, "longest response, in tokens", AT_LEAST_1)
    temperature: float = setting(
        0.9, "sampling temperature; higher gives more varied responses", ABOVE_0
    )
    top_p: float = setting(
        1.0,
        "nucleus sampling: sample from the smallest set of tokens whose probability "
        "reaches this; 1.0 samples from the whole distribution",
        Check(lambda v: 0 < v <= 1, "above 0 and at most 1"),
    )
    seed: int = setting(0, SEED)
    previous_fraction: float = setting(
        0.5,
        "share of a two-policy round's prompts whose pairs are new policy vs previous policy",
        BETWEEN_0_AND_1,
    )
    pair_strategy: str = setting(
        "random",
        "how new-vs-new pairs are chosen among a prompt's samples; uncertainty: the pair "
        "the reward model is least sure about",
        Check(lambda v: v in ("random", "uncertainty"), "random or uncertainty"),
    )


@dataclass(frozen=True)
class RoundSettings:
    """How a new round is judged."""

    overlap: int = setting(3, "judgments each pair collects from different annotators", AT_LEAST_1)
    gold_rate: float = setting(
        0.0,
        "chance that an annotator's next pair is a gold pair (one with a known answer, "
        "which measures the annotator's accuracy) instead of an ordinary one",
        BETWEEN_0_AND_1,
    )
    render: str = setting(
        "text",
        "how the annotate page shows a new round's responses: text (as written) or markdown "
        "(headings, lists, tables and code rendered; images, links and HTML shown as text)",
        Check(lambda v: v in ("text", "markdown"), "text or markdown"),
    )
    rank: int = setting(
        0,
        "responses a new round's annotators rank at once, K from 3 to 6 (a ranking round: "
        "K responses per prompt, one ranking per task); 0 or 2: a pairwise round",
        Check(lambda v: v in (0, 2) or 3 <= v <= 6, "0 or 2 (pairwise), or 3 to 6"),
    )


@dataclass(frozen=True)
class ServeSettings:
    """`rlhf serve` and `rlhf up`: the annotation app."""

    port: int = setting(
        8501,
        "port the app listens on",
        Check(lambda v: 0 < v < 65536, "a port number from 1 to 65535"),
    )
    address: str = setting(
        "localhost",
        "address the app listens on; 0.0.0.0 serves other machines",
    )


@dataclass(frozen=True)
class RuntimeSettings:
    """Where the models run."""

    threads: int = setting(
        0,
        "CPU threads for torch; 0 means one per core this process may use",
        Check(lambda v: v >= 0, "0 (automatic) or more"),
    )
    device: str = setting(
        "auto",
        "where the models run; auto: the first CUDA GPU when there is one, else the CPU",
        Check(
            lambda v: v in ("auto", "cpu", "mps") or v.split(":")[0] == "cuda",
            "auto, cpu, mps, cuda or cuda:N",
        ),
    )


@dataclass(frozen=True)
class SftSettings:
    """`rlhf train sft`: supervised fine-tuning of a policy on demonstrations."""

    epochs: float = setting(1.0, "passes over the demonstrations", ABOVE_0)
    learning_rate: float = setting(5e-5, "learning rate of the optimizer", ABOVE_0)
    batch_size: int = setting(8, "demonstrations per step and device", AT_LEAST_1)
    max_length: int = setting(256, "tokens per demonstration; longer ones are cut", _at_least(8))
    eval_fraction: float = setting(
        0.05,
        "share of the demonstrations held out for eval loss and perplexity",
        Check(lambda v: 0 < v < 1, "above 0 and below 1"),
    )
    builtin_n: int = setting(2000, "how many reviews --builtin uses", _at_least(2))
    checkpoint_every: int = setting(200, "optimizer steps between checkpoints", AT_LEAST_1)
    seed: int = setting(0, SEED)


@dataclass(frozen=True)
class RewardSettings:
    """`rlhf train reward`: the reward model, trained on an export's preference pairs."""

    epochs: float = setting(1.0, "passes over the export's train split", ABOVE_0)
    learning_rate: float = setting(5e-5, "learning rate of the optimizer", ABOVE_0)
    batch_size: int = setting(16, "pairs per step and device", AT_LEAST_1)
    max_length: int = setting(
        128,
        "tokens per (prompt, response); longer inputs keep their end, where the response is",
        _at_least(8),
    )
    center_coefficient: float = setting(
        0.0,
        "weight of the penalty that keeps rewards centred on 0; 0 turns it off",
        ZERO_OR_MORE,
    )
    checkpoint_every: int = setting(200, "optimizer steps between checkpoints", AT_LEAST_1)
    seed: int = setting(0, SEED)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters, used by the commands' --lora."""

    rank: int = setting(16, "rank r of the adapter matrices", AT_LEAST_1)
    alpha: int = setting(32, "LoRA alpha; the update is scaled by alpha / rank", AT_LEAST_1)
    dropout: float = setting(
        0.05,
        "dropout on the adapter's input",
        Check(lambda v: 0 <= v < 1, "at least 0 and below 1"),
    )
    layers: int = setting(
        0,
        "adapters in the top N transformer blocks only; 0: every block. The blocks below "
        "never change, so PPO computes them once per rollout rather than in every pass",
        Check(lambda v: v >= 0, "0 (every block) or more"),
    )
    target_modules: str = setting(
        "auto",
        "modules that get adapters: auto (peft's choice for the architecture), all-linear, "
        "or comma-separated module names such as q_proj,v_proj",
        Check(lambda v: bool(v.strip()), "auto, all-linear or module names"),
    )


@dataclass(frozen=True)
class OptimizeSettings:
    """What PPO, DPO, RLOO and GRPO share; `rlhf train ppo|dpo|rloo|grpo` read it."""

    steps: int = setting(
        100,
        "optimizer steps (PPO, RLOO, GRPO: one rollout each; DPO: one batch of pairs)",
        AT_LEAST_1,
    )
    learning_rate: float = setting(1e-5, "learning rate of the optimizer", ABOVE_0)
    lr_schedule: str = setting(
        "constant",
        "the learning rate over a run; constant, or linear: from learning_rate down to 0 "
        "at the run's last step",
        Check(lambda v: v in ("constant", "linear"), "constant or linear"),
    )
    batch_size: int = setting(16, "prompts (DPO: pairs) per step and process", AT_LEAST_1)
    max_new_tokens: int = setting(48, "longest sampled response, in tokens", AT_LEAST_1)
    temperature: float = setting(1.0, "sampling temperature of the rollouts", ABOVE_0)
    kl_coef: float = setting(
        0.05,
        "weight of the KL penalty to the reference policy (PPO, RLOO, GRPO), or DPO's "
        "beta; raise it to keep the policy closer to where it started",
        ZERO_OR_MORE,
    )
    checkpoint_every: int = setting(50, "steps between checkpoints", AT_LEAST_1)
    samples_every: int = setting(
        10,
        "every this many steps, a table of sample responses goes to the log and terminal",
        AT_LEAST_1,
    )
    seed: int = setting(0, SEED)


@dataclass(frozen=True)
class PpoSettings:
    """`rlhf train ppo` and PPO retraining: our PPO (rlhf_train/policy/ppo.py)."""

    ppo_epochs: int = setting(
        2,
        "passes over each rollout; each pass costs about as much as the rollout itself "
        "(bench/README.md measures 1, 2 and 4)",
        AT_LEAST_1,
    )
    minibatch_size: int = setting(
        4,
        "rollout examples per optimizer step; optimize.batch_size must be a multiple of it",
        AT_LEAST_1,
    )
    gradient_accumulation_steps: int = setting(
        1,
        "forward/backward passes one minibatch is split into, to save memory; "
        "minibatch_size must be a multiple of it",
        AT_LEAST_1,
    )
    max_grad_norm: float = setting(1.0, "gradients are clipped to this norm", ABOVE_0)
    gamma: float = setting(1.0, "discount over the response tokens", BETWEEN_0_AND_1)
    lam: float = setting(0.95, "lambda of generalized advantage estimation", BETWEEN_0_AND_1)
    clip_range: float = setting(
        0.2, "how far the policy ratio may move from 1 before the loss is clipped", ABOVE_0
    )
    clip_range_value: float = setting(
        0.2, "how far a value may move from its rollout value before the loss is clipped", ABOVE_0
    )
    value_coef: float = setting(0.1, "weight of the value loss", ZERO_OR_MORE)
    value_learning_rate: float = setting(
        0.0,
        "learning rate of the value head (and of a separate critic's trunk); 0: "
        "optimize.learning_rate. A head that starts at zero learns slowly at a full-weight "
        "policy's small rate",
        ZERO_OR_MORE,
    )
    whiten_advantages: bool = setting(
        True, "normalize the advantages over each rollout to mean 0 and variance 1"
    )
    value_model: str = setting(
        "shared",
        "where the critic lives; shared: a value head on the policy's trunk; separate: its "
        "own copy of the trunk (more memory)",
        Check(lambda v: v in ("shared", "separate"), "shared or separate"),
    )
    reference: str = setting(
        "parent",
        "the policy the KL penalty holds a run to; parent: the policy the run starts from; "
        "start: the first policy of its lineage, where the loop began, so that drift over "
        "many rounds stays within one budget (a second copy of the weights)",
        Check(lambda v: v in ("parent", "start"), "parent or start"),
    )
    adaptive_kl: bool = setting(
        False, "adapt the KL coefficient so the measured KL approaches target_kl"
    )
    target_kl: float = setting(
        6.0, "the KL (nats per response) adaptive_kl steers towards", ABOVE_0
    )
    kl_horizon: int = setting(
        10000, "episodes over which adaptive_kl moves the coefficient", AT_LEAST_1
    )
    kl_floor: bool = setting(
        False,
        "adaptive_kl never lowers the coefficient below optimize.kl_coef, so target_kl "
        "acts as a budget: a run whose KL is still near 0 cannot talk the coefficient "
        "down to nothing before the policy starts to move",
    )
    kl_limit: float = setting(
        0.0,
        "stop training when the KL to the reference passes this (nats per response); 0: never",
        Check(lambda v: v >= 0, "0 (no limit) or more"),
    )
    missing_eos_penalty: float = setting(
        1.0,
        "subtracted from the score of a response without an end token; 0: no penalty",
        Check(lambda v: v >= 0, "0 (no penalty) or more"),
    )
    normalize_rewards: bool = setting(
        True, "normalize the scores with running statistics before the KL term is added"
    )
    reward_clip: float = setting(
        0.0,
        "scores are clipped to plus or minus this after normalization; 0: no clipping",
        Check(lambda v: v >= 0, "0 (no clipping) or more"),
    )


@dataclass(frozen=True)
class DpoSettings:
    """`rlhf train dpo`: direct preference optimization on an export."""

    max_length: int = setting(256, "tokens per (prompt, response)", _at_least(8))
    epochs: float = setting(
        1.0,
        "passes over the export's train split when optimize.steps does not stop it first",
        ABOVE_0,
    )


@dataclass(frozen=True)
class GroupSettings:
    """RLOO and GRPO sample several responses per prompt and compare them."""

    num_generations: int = setting(
        4, "responses sampled per prompt and compared with each other", _at_least(2)
    )


@dataclass(frozen=True)
class LoopSettings:
    """`rlhf rounds next` and the app's "Start retraining"."""

    optimizer: str = setting(
        "ppo",
        "the policy optimizer a retraining runs",
        Check(lambda v: v in ("ppo", "dpo", "rloo", "grpo"), "ppo, dpo, rloo or grpo"),
    )
    cumulative: bool = setting(
        True, "export the judgments of every closed round (true) or of the closed round only"
    )
    min_judgments: int = setting(
        1,
        "judgments (not counting skips) the closed round needs before it retrains",
        _at_least(1),
    )
    continue_reward: bool = setting(
        True,
        "start the reward model from the previous round's reward model (true) or from "
        "models.reward_backbone (false)",
    )
    next_prompts: int = setting(
        0,
        "prompts in the next round; 0: generation.n_prompts",
        Check(lambda v: v >= 0, "0 (generation.n_prompts) or more"),
    )


@dataclass(frozen=True)
class EvaluateSettings:
    """`rlhf evaluate policy`, also run by every retraining."""

    n_prompts: int = setting(
        64,
        "held-out (eval split) prompts the policies answer; the same ones every time",
        AT_LEAST_1,
    )
    max_new_tokens: int = setting(48, "longest response, in tokens", AT_LEAST_1)
    temperature: float = setting(0.9, "sampling temperature", ABOVE_0)
    judges: str = setting(
        "sentiment",
        "judge functions whose scores the report shows: sentiment (a lexicon score), words "
        "(the response's length), reviews (a classifier fitted on rated reviews); empty for "
        "none",
        Check(
            lambda v: all(j.strip() in JUDGE_NAMES for j in v.split(",") if j.strip()),
            f'a comma-separated list of {", ".join(JUDGE_NAMES)}, or ""',
        ),
    )
    seed: int = setting(0, SEED)


@dataclass(frozen=True)
class WorkerSettings:
    """`rlhf worker`: runs queued trainings."""

    poll_seconds: float = setting(5.0, "seconds between queue polls when idle", ABOVE_0)
    heartbeat_seconds: float = setting(10.0, "seconds between heartbeats while a run runs", ABOVE_0)
    stale_after_seconds: float = setting(
        120.0, "a running run without a heartbeat for this many seconds is marked failed", ABOVE_0
    )
    launcher: str = setting(
        "",
        "the command that starts a retraining job's reward, optimize, evaluate and generate "
        'steps in several processes, e.g. "accelerate launch --multi_gpu --num_processes 8"; '
        "empty runs every step in one process",
    )


@dataclass(frozen=True)
class Config:
    """All settings of a workspace, one attribute per [section] of rlhf.toml."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    prompts: PromptsSettings = field(default_factory=PromptsSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    round: RoundSettings = field(default_factory=RoundSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
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


def sections() -> dict[str, type]:
    """Section name -> its dataclass, in rlhf.toml's order."""
    return {section.name: section.default_factory for section in fields(Config)}


def setting_field(key: str) -> Field | None:
    """The declaration of `key` ("generation.temperature"), or None if there is none."""
    section_name, _, name = key.partition(".")
    section = sections().get(section_name)
    if section is None:
        return None
    return next((item for item in fields(section) if item.name == name), None)


def known_keys() -> list[str]:
    return [
        f"{name}.{item.name}" for name, section in sections().items() for item in fields(section)
    ]


def render_value(value: Any) -> str:
    """`value` written as TOML, as rlhf.toml and the flags' help show defaults."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a TOML basic string
    return str(value)


def setting_help(key: str) -> str:
    """The help of a command-line flag that overrides `key`, ready for argparse (a "%" is
    doubled): the setting's help, what it must be, its default and its key, e.g.
    "sampling temperature; ...; must be above 0 (default: 0.9; setting
    generation.temperature)". An unknown key is a programming error, raised when the
    parser is built."""
    item = setting_field(key)
    if item is None:
        raise KeyError(f"{key!r} is not a setting; known settings are: {', '.join(known_keys())}")
    check = item.metadata["check"]
    must = f"; must be {check.must_be}" if check is not None else ""
    text = f"{item.metadata['help']}{must} (default: {render_value(item.default)}; setting {key})"
    return text.replace("%", "%%")


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
    item = setting_field(key)
    if item is None:
        raise UserError(
            f"Unknown setting {key!r} in {origin}; known settings are: {', '.join(known_keys())}."
        )
    expected_type = {"str": str, "int": int, "float": float, "bool": bool}[str(item.type)]
    coerced = _finite(key, _coerce(key, value, expected_type, origin), origin)
    check = item.metadata["check"]
    if check is not None and not check.test(coerced):
        raise UserError(f"Setting {key} in {origin} is {coerced!r}; it must be {check.must_be}.")
    section_name = key.partition(".")[0]
    section = getattr(config, section_name)
    return replace(config, **{section_name: replace(section, **{item.name: coerced})})


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
    """The rlhf.toml that `rlhf init` writes: every section and every setting, each with
    its help above it and its default commented out, so uncommenting a line changes only
    that setting and the file as written loads as the defaults."""
    lines = [
        "# prefloop workspace settings. Every setting is shown at its default, commented",
        "# out; uncomment a line and change its value to change that setting.",
        "# Environment variables override this file: RLHF_<SECTION>_<KEY>, e.g.",
        "# RLHF_GENERATION_BATCH_SIZE=8, and RLHF_DB_URL for [database] url; command-line",
        "# flags override both.",
    ]
    for name, section in sections().items():
        lines += ["", *_comment(section.__doc__ or ""), f"[{name}]"]
        for item in fields(section):
            check = item.metadata["check"]
            help_text = item.metadata["help"]
            if check is not None:
                help_text += f". Must be {check.must_be}"
            lines += [
                "",
                *_comment(help_text[0].upper() + help_text[1:] + "."),
                f"# {item.name} = {render_value(item.default)}",
            ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    # Wrapped so the file reads in an 88-column editor; help lines never look like
    # "# key = value", which would uncomment into a setting.
    return ["# " + line for line in textwrap.wrap(text, 86, break_on_hyphens=False)]
