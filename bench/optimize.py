"""Benchmark the policy optimizers on one step budget: PPO (ours: full and LoRA, each with
the default update, one epoch and the earlier four epochs, and optionally a separate
value model) against TRL's RLOO (full and LoRA), GRPO and DPO.

One run, one machine: the same starting policy (the packaged SmolLM2-135M-Instruct by
default), the same reward model, the same IMDB prompts and the same number of optimizer
steps per method (`--steps`); the wall time is reported, so a busy machine changes the
times and not the result. The questions, from the issues: is our PPO at most as slow per
episode as TRL's RLOO (LoRA against LoRA, full against full), at least as
sample-efficient as the earlier 4-epoch update, ahead of every TRL method on reward per
wall-minute, and no heavier in memory? The answers are written out plainly, one line per
PPO row, as `verdict`.

What is the same for every method, and why:

- the reward: a positive-sentiment reward model, trained here on the packaged IMDB
  reviews (a review opening as the prompt, a positive review's closing words chosen over
  a negative one's: the pairs of bench/reward.py) through the real import -> export ->
  `train_reward` path, or reused with `--reward FOLDER`. Its test accuracy is
  reported: a weak reward model makes every optimizer look weak;
- the work per optimizer step: `completions_per_step` responses are sampled per step by
  every method (PPO: that many prompts; RLOO and GRPO: that many / num_generations prompts
  with num_generations responses each), so one step samples the same amount of text
  everywhere and episodes compare directly;
- max_new_tokens, temperature 1 with no top-k or top-p, kl_coef (PPO's and RLOO's
  penalty, GRPO's loss term, DPO's beta), the seed, and a learning rate per family: one
  for full fine-tuning, one (10x) for LoRA, whose low-rank update needs a larger step to
  move as far; the rate stays constant (optimize.lr_schedule), as TRL would otherwise
  decay it over the few steps;
- PPO's missing-end-token penalty is off (ppo.missing_eos_penalty = 0), since TRL's
  trainers have none: every method then maximizes the same reward minus the same KL.

DPO is offline: it first samples as many responses as the others do in their steps, two
per train prompt from the starting policy, and scores both with the reward model (chosen
= the higher score); those pairs go through import_preferences and export_preferences
like any team's data, and DPO trains dpo_epochs over them.

Each method runs in a fresh subprocess of this script (`--only METHOD --state FILE`), so
its peak resident memory (and peak GPU memory on CUDA) is its own. In the same process,
after the peak is read, the trained policy is evaluated with
`rlhf_train.evaluation.measures.evaluate_policy` on the same held-out eval-split prompts with the
same seed as the starting policy: reward mean before and after, Monte-Carlo KL to the
starting policy, response length, distinct-2 and repetition. Per method the table also
gives episodes (responses sampled: for DPO, pairs x 2), the optimizer's own seconds and
seconds per episode, this process's CPU seconds per episode (a neighbour taking a core
changes it least), the whole train call's seconds (model load, reference copy, saving
and registering, and DPO's sampling), peak RSS, reward gained per wall-minute (of the
whole train call) and per 1000 episodes, and how many cores other processes kept busy.
PPO's rows also get a profile: seconds per step in generation, scoring, the reference's
log-probabilities, pi_old's log-probabilities and values, and each update epoch.

Every gain carries a 95% bootstrap interval over the eval prompts (paired: the same
prompts before and after), and so do the differences the verdict compares.

Run it from the repository root:

    python bench/optimize.py               # about an hour on 2 CPU cores; prints the tables,
                                           # writes bench/results/optimize.json
    python bench/optimize.py --quick       # a smoke run of a few minutes; writes nothing
                                           # unless --out is given
    python bench/optimize.py --device cuda --policy openai-community/gpt2 --steps 20
    python bench/optimize.py --methods ppo-lora,rloo-lora --reward path/to/reward-model
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import gc
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import (
    CpuClock,
    commit,
    cpu_clock,
    machine,
    other_cores,
    run_benchmark,
    write_json,
)

from db.engine import transaction
from db.prompts import add_prompts
from rlhf_train.config import PpoSettings
from rlhf_train.errors import UserError
from rlhf_train.evaluation.measures import evaluate_policy
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.models.builtin import BUILTIN_MODELS
from rlhf_train.models.loading import configure_threads, load_policy, resolve_device
from rlhf_train.models.sampling import Decoding, PromptInput, sample_completions
from rlhf_train.models.source import model_location, resolve_policy
from rlhf_train.policy.optimize import OptimizeOptions, optimize_policy
from rlhf_train.policy.prompts import load_policy_prompts
from rlhf_train.prompts.sources import builtin_prompts
from rlhf_train.prompts.split import split_by_hash
from rlhf_train.reward.scorer import RewardScorer
from rlhf_train.reward.train import RewardOptions, train_reward
from rlhf_train.rounds.import_preferences import PreferenceRow, import_preferences
from rlhf_train.runs.record import read_run_log
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results" / "optimize.json"
# A model cache that `rlhf up` in the repository root leaves behind, reused if present.
REPO_MODEL_CACHE = REPO_ROOT / "rlhf-workspace" / "models"
PROMPT_WORDS = 8
EVAL_FRACTION = 0.1
# Out of reach: the time limit, not the step count, ends every run (and TRL's linear
# learning-rate decay over max_steps stays flat); checkpoints would only cost time.
UNREACHED_STEPS = 1_000_000
REWARD_SOURCE = "bench:imdb-sentiment"
DPO_SOURCE = "bench:dpo-self-scored"
# Other processes busier than this (in cores) beyond the cores the benchmark leaves free
# (all but --threads) make the timings suspect: they then compete for our cores.
DISTURBED_CORES = 0.25


@dataclass(frozen=True)
class Settings:
    """What every method trains and is evaluated with."""

    steps: int  # optimizer steps per method: the budget, the same for every method
    prompts: int  # IMDB review openings imported; about 10% land in the eval split
    eval_prompts: int
    completions_per_step: int  # responses sampled per optimizer step, by every method
    num_generations: int  # RLOO/GRPO responses per prompt
    max_new_tokens: int
    temperature: float
    kl_coef: float
    learning_rate: float  # full fine-tuning
    lora_learning_rate: float
    dpo_epochs: float
    reward_train_pairs: int
    reward_test_pairs: int
    reward_max_length: int
    reward_snippet_words: tuple[int, int]
    reward_snippet_from: str  # "end": a review's closing words; "start": right after the prompt
    seed: int


DEFAULTS = Settings(
    steps=8,
    # About 10% land in the eval split: enough for 128 eval prompts.
    prompts=1500,
    # 128 held-out prompts: the interval of a gain is about 0.1 reward wide each side.
    eval_prompts=128,
    completions_per_step=16,
    num_generations=4,
    max_new_tokens=32,
    temperature=1.0,
    kl_coef=0.05,
    learning_rate=3e-5,
    lora_learning_rate=3e-4,
    dpo_epochs=2.0,
    reward_train_pairs=1000,
    reward_test_pairs=250,
    reward_max_length=64,
    reward_snippet_words=(20, 40),
    # A review's closing words state its verdict, so the reward model learns sentiment
    # rather than plot: 0.90 test accuracy from 1000 pairs against 0.80 for the words
    # right after the opening, in two runs of this benchmark.
    reward_snippet_from="end",
    seed=0,
)
QUICK = replace(
    DEFAULTS,
    steps=2,
    prompts=200,
    eval_prompts=8,
    completions_per_step=8,
    num_generations=2,
    max_new_tokens=12,
    reward_train_pairs=100,
    reward_test_pairs=40,
    reward_max_length=48,
)


@dataclass(frozen=True)
class Method:
    name: str
    algorithm: str
    lora: bool = False
    value_model: str = "shared"
    description: str = ""
    # Workspace settings this variant changes from the defaults (PPO's epochs, say).
    settings: tuple[tuple[str, Any], ...] = ()
    # A multiple of the run's learning rate (--learning-rate or --lora-learning-rate).
    rate_factor: float = 1.0
    # PPO's value head at this multiple of the policy's rate (ppo.value_learning_rate);
    # 0: the policy's rate.
    value_rate_factor: float = 0.0


def update_variant(epochs: int, minibatch: int, lora: bool, why: str) -> Method:
    """PPO with another update than the workspace default: `epochs` passes over each
    rollout in minibatches of `minibatch`."""
    family = "LoRA" if lora else "full fine-tuning"
    return Method(
        f"ppo{'-lora' if lora else ''}-e{epochs}",
        "ppo",
        lora=lora,
        description=f"ours, {family}, {epochs} epoch(s) of minibatches of {minibatch}: {why}",
        settings=(("ppo.ppo_epochs", epochs), ("ppo.minibatch_size", minibatch)),
    )


def top_blocks_variant(
    algorithm: str, why: str, epochs: int = 0, minibatch: int = 0, rate_factor: int = 1
) -> Method:
    """`algorithm` with LoRA in the top TOP_BLOCKS blocks only (PPO: with `epochs` of
    `minibatch` when given, else the workspace's update; with `rate_factor` times the
    LoRA learning rate when given)."""
    update = (("ppo.ppo_epochs", epochs), ("ppo.minibatch_size", minibatch)) if epochs else ()
    return Method(
        f"{algorithm}-lora-top"
        + (f"-e{epochs}" if epochs else "")
        + (f"-lr{rate_factor}" if rate_factor != 1 else ""),
        algorithm,
        lora=True,
        description=f"top {TOP_BLOCKS} blocks; {why}",
        settings=(("lora.layers", TOP_BLOCKS), *update),
        rate_factor=rate_factor,
    )


def value_rate_variant(base: Method, factor: int) -> Method:
    """`base` with its value head learning at `factor` times the policy's rate."""
    return replace(
        base,
        name=f"{base.name}-v{factor}",
        description=f"{base.description}; value head at {factor}x the rate",
        value_rate_factor=factor,
    )


# Half of SmolLM2-135M's 30 blocks; a --policy with fewer blocks is refused by lora.layers.
TOP_BLOCKS = 15
METHODS = {
    method.name: method
    for method in (
        Method("ppo", "ppo", description="ours, full fine-tuning, value head on the trunk"),
        Method("ppo-lora", "ppo", lora=True, description="ours, LoRA (reference = adapter off)"),
        # One epoch: PPO at RLOO's cost per episode. Four of 8: the update of 2026-11-21,
        # whose sample efficiency the cheaper updates are measured against.
        *(
            update_variant(epochs, minibatch, lora, why)
            for lora in (False, True)
            for epochs, minibatch, why in (
                (1, 2, "the cost of one pass"),
                (4, 8, "the earlier default"),
            )
        ),
        Method(
            "ppo-separate",
            "ppo",
            value_model="separate",
            description="ours, full fine-tuning, critic on its own trunk copy",
        ),
        top_blocks_variant("ppo", "ours, LoRA only there: the blocks below once a rollout"),
        Method("rloo", "rloo", description="TRL RLOOTrainer, full fine-tuning"),
        Method("rloo-lora", "rloo", lora=True, description="TRL RLOOTrainer, LoRA"),
        top_blocks_variant("ppo", "four epochs of 8, the earlier default's update", 4, 8),
        top_blocks_variant("rloo", "TRL RLOOTrainer, LoRA only there (like with like)"),
        # Half the adapted blocks train, so each can take a larger step.
        top_blocks_variant("ppo", "twice the LoRA learning rate", rate_factor=2),
        Method("grpo", "grpo", description="TRL GRPOTrainer, full fine-tuning"),
        Method("dpo", "dpo", description="TRL DPOTrainer on self-sampled, reward-scored pairs"),
    )
}
# At full weight the head, which starts at zero, learns at the policy's 3e-5: ten times
# that for the default update and for the one at RLOO's cost per episode.
METHODS |= {
    variant.name: variant
    for variant in (value_rate_variant(METHODS[name], 10) for name in ("ppo", "ppo-e1"))
}
# ppo-separate is left out unless named: it costs the most and decides nothing here.
DEFAULT_METHODS = [name for name in METHODS if name != "ppo-separate"]
START = "start"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="PPO vs RLOO vs GRPO vs DPO on one reward model and one step budget"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run of a few minutes ({QUICK.steps} steps per method, "
        f"{QUICK.eval_prompts} eval prompts, {QUICK.max_new_tokens} new tokens); writes no "
        "JSON unless --out is given",
    )
    parser.add_argument(
        "--policy",
        default="smollm2-135m-instruct",
        help="starting policy: a built-in name, a model folder or a hub id available offline "
        "(default smollm2-135m-instruct)",
    )
    parser.add_argument(
        "--reward",
        type=Path,
        default=None,
        help="a reward-model folder to reuse (default: train one on IMDB sentiment pairs)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default all but ppo-separate)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimizer steps per method (default {DEFAULTS.steps}); the wall time is reported",
    )
    parser.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts")
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="learning rate of full fine-tuning"
    )
    parser.add_argument(
        "--lora-learning-rate", type=float, default=None, help="learning rate with LoRA"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="response length cap")
    parser.add_argument("--seed", type=int, default=None, help="seed of everything")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads, 0 for all cores (default 1: on a 2-core machine shared with "
        "another user, torch's threads slow down many times over when the other process "
        "takes a core, and 1 thread measures the methods, not the neighbour)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="workspace to use and keep, with the trained policies, run logs and each "
        "method's output (default: a temporary folder)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output ({DEFAULT_OUT})")
    # The per-method subprocess.
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only is not None:
        if args.state is None:
            parser.error("--only needs --state")
        return args
    base = QUICK if args.quick else DEFAULTS
    chosen = {
        "steps": args.steps,
        "eval_prompts": args.eval_prompts,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "learning_rate": args.learning_rate,
        "lora_learning_rate": args.lora_learning_rate,
    }
    args.settings = replace(base, **{k: v for k, v in chosen.items() if v is not None})
    settings: Settings = args.settings
    if settings.steps < 1:
        parser.error("--steps must be 1 or more")
    if settings.learning_rate <= 0 or settings.lora_learning_rate <= 0:
        parser.error("--learning-rate and --lora-learning-rate must be above 0")
    if settings.eval_prompts < 2 or settings.max_new_tokens < 1:
        parser.error("--eval-prompts must be at least 2 and --max-new-tokens at least 1")
    args.method_names = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in args.method_names if name not in METHODS]
    if unknown or not args.method_names:
        parser.error(f"--methods: unknown {unknown}; use some of {', '.join(METHODS)}")
    if args.reward is not None and not (args.reward / "config.json").is_file():
        parser.error(f"--reward {args.reward} is not a model folder")
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    return args


# ---- settings as workspace overrides ---------------------------------------------------


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        # Never write benchmark runs into a database that RLHF_DB_URL points at.
        "database.url": "",
        "runtime.device": args.device,
        "runtime.threads": args.threads,
        "prompts.eval_fraction": EVAL_FRACTION,
    }


def method_overrides(settings: Settings, method: Method) -> dict[str, Any]:
    """The workspace settings one method trains with (see the module docstring)."""
    per_step = settings.completions_per_step
    overrides: dict[str, Any] = {
        # DPO's steps follow from its pairs and dpo.epochs (see train_method).
        "optimize.steps": UNREACHED_STEPS if method.algorithm == "dpo" else settings.steps,
        # The same rate throughout, for every method (TRL's trainers would decay it).
        "optimize.lr_schedule": "constant",
        "optimize.checkpoint_every": UNREACHED_STEPS,
        "optimize.samples_every": UNREACHED_STEPS,
        "optimize.learning_rate": method.rate_factor
        * (settings.lora_learning_rate if method.lora else settings.learning_rate),
        "optimize.max_new_tokens": settings.max_new_tokens,
        "optimize.temperature": settings.temperature,
        "optimize.kl_coef": settings.kl_coef,
        "optimize.seed": settings.seed,
    }
    if method.algorithm == "ppo":
        overrides |= {
            "optimize.batch_size": per_step,
            "ppo.value_model": method.value_model,
            "ppo.missing_eos_penalty": 0.0,
        }
    elif method.algorithm in ("rloo", "grpo"):
        overrides |= {
            "optimize.batch_size": max(1, per_step // settings.num_generations),
            "group.num_generations": settings.num_generations,
        }
    else:
        overrides |= {
            "optimize.batch_size": max(1, per_step // 2),
            "dpo.epochs": settings.dpo_epochs,
        }
    overrides |= dict(method.settings)
    if method.value_rate_factor:
        overrides["ppo.value_learning_rate"] = (
            method.value_rate_factor * overrides["optimize.learning_rate"]
        )
    if method.algorithm == "ppo":
        # The workspace's minibatch (or the variant's), cut to divide a --quick rollout.
        minibatch = overrides.get("ppo.minibatch_size", PpoSettings().minibatch_size)
        overrides["ppo.minibatch_size"] = math.gcd(per_step, minibatch)
    return overrides


# ---- setup (not timed) -----------------------------------------------------------------


def reuse_model_cache(workspace: Workspace, model: str) -> None:
    """Link a built-in model already converted in ./rlhf-workspace into `workspace`."""
    cached = REPO_MODEL_CACHE / model
    target = workspace.models_dir / model
    if model in BUILTIN_MODELS and (cached / "config.json").is_file() and not target.exists():
        target.symlink_to(cached.resolve(), target_is_directory=True)


def open_workspace(root: Path, overrides: dict[str, Any]) -> Workspace:
    workspace = Workspace.open(root, overrides)
    init_workspace(workspace)
    return workspace


def import_prompts(workspace: Workspace, settings: Settings) -> tuple[int, int]:
    texts = builtin_prompts("imdb", settings.prompts, PROMPT_WORDS, seed=settings.seed)
    with transaction(workspace.sessions) as session:
        add_prompts(
            session,
            texts,
            source="builtin:imdb",
            chat=False,
            split_of=split_by_hash(EVAL_FRACTION),
        )
    train = len(load_policy_prompts(workspace, None))
    return train, len(eval_prompts(workspace, settings.eval_prompts))


def eval_prompts(workspace: Workspace, count: int) -> list[PromptInput]:
    """The first `count` eval-split prompts by content hash: never trained on."""
    from sqlalchemy import select

    from db.models import Prompt

    with workspace.sessions() as session:
        rows = session.execute(
            select(Prompt.text, Prompt.chat)
            .where(Prompt.split == "eval")
            .order_by(Prompt.content_hash)
            .limit(count)
        ).all()
    return [PromptInput(text, chat) for text, chat in rows]


def register_policy(workspace: Workspace, spec: str) -> tuple[str, str]:
    """Register (and convert, for a built-in) the policy; its name and load location."""
    with transaction(workspace.sessions) as session:
        row = resolve_policy(session, spec, workspace.models_dir)
        return row.name, model_location(row)


# ---- the reward model --------------------------------------------------------------------


def sentiment_pairs(settings: Settings) -> tuple[list[PreferenceRow], list[PreferenceRow], str]:
    """Train and test pairs, the positive review's snippet chosen: bench/reward.py's recipe,
    so both benchmarks train on the same kind of pairs."""
    import reward as reward_bench

    shape = replace(
        reward_bench.DEFAULTS,
        train_pairs=settings.reward_train_pairs,
        test_pairs=settings.reward_test_pairs,
        prompt_words=PROMPT_WORDS,
        snippet_words=settings.reward_snippet_words,
        snippet_from=settings.reward_snippet_from,
        max_length=settings.reward_max_length,
        seed=settings.seed,
    )
    positive, negative = reward_bench.read_reviews()
    train, test = reward_bench.build_pairs(positive, negative, shape)
    return train, test, "bench/reward.py build_pairs"


def train_sentiment_reward(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A positive-sentiment reward model in its own workspace (so that its pairs' prompts
    stay out of the policy workspace's train split); its folder and test accuracy."""
    settings: Settings = args.settings
    workspace = open_workspace(
        root,
        base_overrides(args)
        | {
            "reward.max_length": settings.reward_max_length,
            "reward.batch_size": 16,
            # Above the workspace default: one epoch over a thousand pairs must learn it.
            "reward.learning_rate": 2e-4,
            "reward.epochs": 1.0,
            "reward.seed": settings.seed,
        },
    )
    train, test, built_by = sentiment_pairs(settings)
    started = time.perf_counter()
    with transaction(workspace.sessions) as session:
        import_preferences(session, train + test, REWARD_SOURCE)
    out = root / "exports" / "imdb-sentiment"
    export_preferences(
        workspace,
        ExportOptions(
            out=out,
            test_fraction=len(test) / (len(train) + len(test)),
            seed=settings.seed,
            overwrite=True,
        ),
    )
    result = train_reward(workspace, RewardOptions(data=str(out), progress=False))
    workspace.engine.dispose()
    return {
        "folder": str(result.path),
        "accuracy": float(result.metrics["test_accuracy"]),
        "train_pairs": int(result.metrics["train_pairs"]),
        "test_pairs": int(result.metrics["test_pairs"]),
        "seconds": time.perf_counter() - started,
        "trained_here": True,
        "pairs_built_by": built_by,
    }


def reused_reward(folder: Path) -> dict[str, Any]:
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    accuracy = metrics.get("test_accuracy")
    return {
        "folder": str(folder.resolve()),
        "accuracy": float(accuracy) if accuracy is not None else None,
        "train_pairs": metrics.get("train_pairs"),
        "test_pairs": metrics.get("test_pairs"),
        "seconds": 0.0,
        "trained_here": False,
        "pairs_built_by": None,
    }


# ---- one method, in its own process ------------------------------------------------------


def peak_memory(device: str) -> dict[str, float | None]:
    # ru_maxrss is in KiB on Linux.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {"peak_rss_mib": rss, "peak_gpu_mib": gpu}


def self_scored_pairs(
    workspace: Workspace, state: dict[str, Any], responses: int
) -> tuple[list[PreferenceRow], int]:
    """DPO's data: two responses per train prompt from the starting policy, scored by the
    reward model, the higher one chosen; `responses` of them sampled. The rows and how
    many responses were sampled."""
    settings = Settings(**state["settings"])
    device = resolve_device(workspace.config.runtime.device)
    model, tokenizer = load_policy(state["policy_location"], device)
    # Sampled as PPO, RLOO and GRPO sample: from the whole distribution.
    model.generation_config.top_k = 0
    scorer = RewardScorer.load(state["reward"]["folder"], device)
    prompts = load_policy_prompts(workspace, None)
    random.Random(settings.seed).shuffle(prompts)
    per_batch = max(1, settings.completions_per_step // 2)
    decoding = Decoding(
        settings.max_new_tokens, settings.temperature, 1.0, settings.completions_per_step
    )
    rows: list[PreferenceRow] = []
    sampled = 0
    for number, start in enumerate(range(0, len(prompts), per_batch)):
        if sampled >= responses:
            break
        batch = prompts[start : start + per_batch]
        results = sample_completions(
            model, tokenizer, [(p, 2) for p in batch], decoding, settings.seed + 1000 * number
        )
        flat = [completion.text for pair in results for completion in pair]
        scores = scorer.score([p.text for p in batch for _ in range(2)], flat).tolist()
        sampled += len(flat)
        for number_in_batch, prompt in enumerate(batch):
            first, second = flat[2 * number_in_batch : 2 * number_in_batch + 2]
            a, b = scores[2 * number_in_batch : 2 * number_in_batch + 2]
            # A tie says nothing, and import_preferences drops identical texts anyway.
            if a != b and first.strip() and second.strip() and first != second:
                chosen, rejected = (first, second) if a > b else (second, first)
                rows.append(PreferenceRow(prompt.text, chosen, rejected))
    del model, scorer
    gc.collect()
    return rows, sampled


def export_pairs(workspace: Workspace, rows: list[PreferenceRow], seed: int) -> Path:
    with transaction(workspace.sessions) as session:
        report = import_preferences(session, rows, DPO_SOURCE)
    out = workspace.root / "exports" / f"dpo-round-{report.round_number}"
    export_preferences(
        workspace,
        ExportOptions(out=out, rounds=[report.round_number], test_fraction=0.0, seed=seed),
    )
    return out


def phase_seconds(workspace: Workspace, run_id: int) -> dict[str, float] | None:
    """PPO's seconds per step in each phase (generate, reference, update epochs...), the
    mean over its steps after the first (which also warms up the allocator); None for
    TRL's trainers, which do not report them."""
    records = read_run_log(workspace.logs_dir / f"run-{run_id}.jsonl")
    phases = [r["phase_seconds"] for r in records if "phase_seconds" in r]
    steady = phases[1:] or phases
    if not steady:
        return None
    names = list(dict.fromkeys(name for step in steady for name in step))
    return {name: statistics.fmean(step.get(name, 0.0) for step in steady) for name in names}


def loop_seconds(workspace: Workspace, run_id: int, metrics: dict[str, Any]) -> float:
    """Seconds inside the optimizer's steps: PPO's per-step clock summed from its run log,
    or the TRL Trainer's own train runtime."""
    if metrics.get("train_runtime_s") is not None:
        return float(metrics["train_runtime_s"])
    records = read_run_log(workspace.logs_dir / f"run-{run_id}.jsonl")
    return sum(float(r["seconds"]) for r in records if "seconds" in r and "samples" not in r)


def train_method(workspace: Workspace, state: dict[str, Any], method: Method) -> dict[str, Any]:
    settings = Settings(**state["settings"])
    figures: dict[str, Any] = {}
    before = cpu_clock()
    data = None
    if method.algorithm == "dpo":
        # As many responses as every other method samples in its steps.
        budget = settings.steps * settings.completions_per_step
        rows, sampled = self_scored_pairs(workspace, state, budget)
        if not rows:
            raise UserError("DPO sampled no pair with two different scores; raise --steps.")
        data = str(export_pairs(workspace, rows, settings.seed))
        figures |= {"dpo_pairs": len(rows), "sampled": sampled}
    prepared = time.perf_counter() - before.wall
    result = optimize_policy(
        workspace,
        OptimizeOptions(
            algorithm=method.algorithm,
            policy=state["policy_name"],
            reward=state["reward"]["folder"],
            data=data,
            lora=method.lora,
            progress=False,
        ),
    )
    after = cpu_clock()
    assert result is not None
    metrics = result.metrics
    loop_s = loop_seconds(workspace, result.run_id, metrics) + (
        prepared if method.algorithm == "dpo" else 0.0
    )
    episodes = figures.pop("sampled") if method.algorithm == "dpo" else int(metrics["episodes"])
    figures |= {
        "steps": int(metrics["steps"]),
        "episodes": episodes,
        "train_s": after.wall - before.wall,
        "loop_s": loop_s,
        "dpo_sampling_s": prepared if method.algorithm == "dpo" else None,
        "cpu_s": after.own - before.own,
        "phase_seconds": phase_seconds(workspace, result.run_id),
        "train_other_cores": other_cores(before, after),
        "train_first_score": metrics.get("first_score_mean"),
        "train_last_score": metrics.get("last_score_mean"),
        "train_last_kl": metrics.get("last_kl"),
        "model_path": str(result.path),
        **peak_memory(resolve_device(workspace.config.runtime.device)),
    }
    return figures


def evaluate(workspace: Workspace, state: dict[str, Any], policy_location: str) -> dict[str, Any]:
    settings = Settings(**state["settings"])
    device = resolve_device(workspace.config.runtime.device)
    policy, tokenizer = load_policy(policy_location, device)
    if policy_location == state["policy_location"]:
        reference = policy
    else:
        reference, _ = load_policy(state["policy_location"], device)
    scorer = RewardScorer.load(state["reward"]["folder"], device)
    prompts = [PromptInput(text, chat) for text, chat in state["eval_prompts"]]
    started = cpu_clock()
    figures = evaluate_policy(
        policy,
        tokenizer,
        prompts,
        scorer.score,
        reference,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        batch_size=16,
    )
    finished = cpu_clock()
    figures["eval_s"] = finished.wall - started.wall
    return figures


def run_only(args: argparse.Namespace) -> int:
    """The subprocess: train one method (or none, for the starting policy) and evaluate."""
    state = json.loads(args.state.read_text(encoding="utf-8"))
    settings = Settings(**state["settings"])
    out = Path(state["results"]) / f"{args.only}.json"
    if args.only == START:
        workspace = open_workspace(Path(state["root"]), state["overrides"])
        configure_threads(workspace.config.runtime.threads)
        figures = {"evaluation": evaluate(workspace, state, state["policy_location"])}
    else:
        method = METHODS[args.only]
        workspace = open_workspace(
            Path(state["root"]), state["overrides"] | method_overrides(settings, method)
        )
        configure_threads(workspace.config.runtime.threads)
        figures = train_method(workspace, state, method)
        gc.collect()
        figures["evaluation"] = evaluate(workspace, state, figures["model_path"])
    figures["threads"] = torch.get_num_threads()
    write_json(out, figures)
    return 0


# ---- the orchestrating process ------------------------------------------------------------


def run_child(name: str, state_file: Path, log_dir: Path, timeout: float) -> dict[str, Any]:
    """Run `--only name` in a fresh interpreter; its figures, or {"error": ...}."""
    log = log_dir / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--state"]
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        try:
            completed = subprocess.run(
                [*command, str(state_file)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=REPO_ROOT,
                check=False,
            )
            code = completed.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - started
    result_file = state_file.parent / f"{name}.json"
    if code == 0 and result_file.is_file():
        figures = json.loads(result_file.read_text(encoding="utf-8"))
        figures["process_s"] = wall
        return figures
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
    print(f"  {name} failed ({code}); the end of {log}:\n    " + "\n    ".join(tail), flush=True)
    return {"error": f"exit {code}: {tail[-1] if tail else ''}"[:300], "process_s": wall}


BOOTSTRAP_RESAMPLES = 2000
# Peak resident memory of the PPO rows on 2026-11-21 (bench/README.md): the issue's cap.
EARLIER_PEAK_RSS_MIB = {"ppo": 3986.0, "ppo-lora": 2280.0}
PAIRED = {
    name: (earlier, rloo)
    for names, earlier, rloo in (
        (("ppo", "ppo-e1", "ppo-v10", "ppo-e1-v10"), "ppo-e4", "rloo"),
        (("ppo-lora", "ppo-lora-e1"), "ppo-lora-e4", "rloo-lora"),
        # Like with like: RLOO with the same adapter in the same blocks.
        (("ppo-lora-top", "ppo-lora-top-e4", "ppo-lora-top-lr2"), "ppo-lora-e4", "rloo-lora-top"),
    )
    for name in names
}
TRL_METHODS = ("rloo", "rloo-lora", "rloo-lora-top", "grpo", "dpo")


def bootstrap_interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `values`, resampled with replacement (here:
    per-prompt differences, so the interval is one over prompts)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(data), (BOOTSTRAP_RESAMPLES, len(data)))
    means = data[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def derived(figures: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """Reward gained, per wall-minute and per 1000 episodes, against the starting policy."""
    before, after = start["evaluation"], figures["evaluation"]
    gain = after["score_mean"] - before["score_mean"]
    episodes = figures["episodes"]
    # Paired over the same eval prompts: a prompt that opens a scathing review pulls both
    # policies' scores down, and that shared part is no uncertainty about the gain.
    differences = [a - b for a, b in zip(after["scores"], before["scores"], strict=True)]
    gain_se = statistics.stdev(differences) / math.sqrt(len(differences))
    low, high = bootstrap_interval(differences)
    per_1k = 1000 / episodes if episodes else math.nan
    return {
        "reward_before": before["score_mean"],
        "reward_after": after["score_mean"],
        "reward_gain": gain,
        "reward_gain_se": gain_se,
        "reward_gain_low": low,
        "reward_gain_high": high,
        "kl": after["kl"],
        "reference_perplexity": after["reference_perplexity"],
        "response_length": after["response_length"],
        "unfinished_fraction": after["unfinished_fraction"],
        "distinct_2": after["distinct_2"],
        "repetition_rate": after["repetition_rate"],
        "steps": figures["steps"],
        "episodes": episodes,
        "train_s": figures["train_s"],
        "loop_s": figures["loop_s"],
        "s_per_episode": figures["loop_s"] / episodes if episodes else None,
        "cpu_s_per_episode": figures["cpu_s"] / episodes if episodes else None,
        "phase_seconds": figures["phase_seconds"],
        "peak_rss_mib": figures["peak_rss_mib"],
        "peak_gpu_mib": figures["peak_gpu_mib"],
        "reward_gain_per_minute": gain / (figures["train_s"] / 60),
        "reward_gain_per_1k_episodes": gain * per_1k,
        "reward_gain_per_1k_low": low * per_1k,
        "reward_gain_per_1k_high": high * per_1k,
        "train_other_cores": figures["train_other_cores"],
        "train_first_score": figures["train_first_score"],
        "train_last_score": figures["train_last_score"],
        "dpo_pairs": figures.get("dpo_pairs"),
        "dpo_sampling_s": figures.get("dpo_sampling_s"),
        "eval_s": after["eval_s"],
        "process_s": figures["process_s"],
        "reward_sem_after": after["score_sem"],
        "scores_before": before["scores"],
        "scores_after": after["scores"],
        "samples": after["samples"][:2],
    }


def _ran(rows: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    row = rows.get(name)
    return row if row and "error" not in row else None


def per_1k_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[float, float, float]:
    """Reward per 1000 episodes of `ours` minus `theirs`, with its 95% interval over the
    eval prompts (both policies answered the same prompts, so the difference is paired)."""
    scale_ours, scale_theirs = 1000 / ours["episodes"], 1000 / theirs["episodes"]
    differences = [
        (a - start) * scale_ours - (b - start) * scale_theirs
        for a, b, start in zip(
            ours["scores_after"], theirs["scores_after"], ours["scores_before"], strict=True
        )
    ]
    low, high = bootstrap_interval(differences)
    return statistics.fmean(differences), low, high


def verdict(rows: dict[str, dict[str, Any]], steps: int) -> list[str]:
    """The issue's goals, one plain sentence each: PPO (full and LoRA) at most RLOO's
    seconds per episode, at least the earlier update's reward per 1000 episodes (within
    the interval), ahead of every TRL method on reward per wall-minute, and no more peak
    memory than before."""
    lines = []
    for name, (earlier, rloo) in PAIRED.items():
        ppo = _ran(rows, name)
        if ppo is None:
            continue
        parts = [f"{name} ({steps} steps):"]
        if (theirs := _ran(rows, rloo)) is not None:
            ratio = ppo["s_per_episode"] / theirs["s_per_episode"]
            cpu_ratio = ppo["cpu_s_per_episode"] / theirs["cpu_s_per_episode"]
            met = "MET" if ratio <= 1 else "NOT met"
            parts.append(
                f"speed {met}: {ppo['s_per_episode']:.2f} vs {rloo}'s "
                f"{theirs['s_per_episode']:.2f} s/episode ({ratio:.2f}x; in CPU time "
                f"{cpu_ratio:.2f}x);"
            )
        if (before := _ran(rows, earlier)) is not None:
            mean, low, high = per_1k_difference(ppo, before)
            met = "MET" if high >= 0 else "NOT met"
            parts.append(
                f"sample efficiency {met}: {ppo['reward_gain_per_1k_episodes']:+.2f} vs "
                f"{earlier}'s {before['reward_gain_per_1k_episodes']:+.2f} reward per 1000 "
                f"episodes (difference {mean:+.2f}, 95% [{low:+.2f}, {high:+.2f}]);"
            )
        others = {n: _ran(rows, n) for n in TRL_METHODS if _ran(rows, n) is not None}
        if others:
            best = max(others, key=lambda n: others[n]["reward_gain_per_minute"])
            ahead = ppo["reward_gain_per_minute"] > others[best]["reward_gain_per_minute"]
            parts.append(
                f"reward per minute {'MET' if ahead else 'NOT met'}: "
                f"{ppo['reward_gain_per_minute']:+.3f} vs the best TRL method's ({best}) "
                f"{others[best]['reward_gain_per_minute']:+.3f};"
            )
        cap = EARLIER_PEAK_RSS_MIB["ppo-lora" if "lora" in name else "ppo"]
        parts.append(
            f"peak memory {'MET' if ppo['peak_rss_mib'] <= cap else 'NOT met'}: "
            f"{ppo['peak_rss_mib']:.0f} MiB vs {cap:.0f} MiB before."
        )
        lines.append(" ".join(parts))
    return lines or ["PPO did not run: nothing to compare."]


def gpu_machine(device: str, threads: int) -> dict[str, object]:
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else None
    return machine(("torch", "transformers", "trl"), threads=threads, device=device, gpu=gpu)


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(start: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    header = (
        "method",
        "steps",
        "episodes",
        "train s",
        "loop s",
        "s/episode",
        "CPU s/ep",
        "peak RSS MiB",
        "reward",
        "gain [95%]",
        "KL",
        "length",
        "distinct-2",
        "repeats",
        "gain/min",
        "gain/1k ep [95%]",
        "other load",
    )
    first = start["evaluation"]
    cells = [
        header,
        (
            "start",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            f"{first['score_mean']:.3f}",
            f"+- {first['score_sem']:.3f}",
            "0",
            f"{first['response_length']:.1f}",
            f"{first['distinct_2']:.3f}",
            f"{first['repetition_rate']:.2f}",
            "-",
            "-",
            "-",
        ),
    ]
    for name, row in rows.items():
        if "error" in row:
            cells.append((name, "failed", *["-"] * (len(header) - 2)))
            continue
        cells.append(
            (
                name,
                str(row["steps"]),
                str(row["episodes"]),
                f"{row['train_s']:.0f}",
                f"{row['loop_s']:.0f}",
                _cell(row["s_per_episode"], ".2f"),
                _cell(row["cpu_s_per_episode"], ".2f"),
                f"{row['peak_rss_mib']:.0f}",
                f"{row['reward_after']:.3f}",
                f"{row['reward_gain']:+.3f} [{row['reward_gain_low']:+.2f}, "
                f"{row['reward_gain_high']:+.2f}]",
                _cell(row["kl"], ".2f"),
                f"{row['response_length']:.1f}",
                f"{row['distinct_2']:.3f}",
                f"{row['repetition_rate']:.2f}",
                f"{row['reward_gain_per_minute']:+.3f}",
                f"{row['reward_gain_per_1k_episodes']:+.2f} "
                f"[{row['reward_gain_per_1k_low']:+.1f}, {row['reward_gain_per_1k_high']:+.1f}]",
                f"{row['train_other_cores']:.2f}",
            )
        )
    return aligned(cells)


def aligned(cells: list[tuple[str, ...]]) -> str:
    """Rows of cells as a text table: the first column left-aligned, the rest right."""
    header = cells[0]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def profile_table(rows: dict[str, dict[str, Any]]) -> str | None:
    """Seconds per step in each phase of PPO's steps (mean over steps 2..), per PPO row."""
    profiled = {n: r["phase_seconds"] for n, r in rows.items() if r.get("phase_seconds")}
    if not profiled:
        return None
    phases = list(dict.fromkeys(phase for row in profiled.values() for phase in row))
    cells = [("method", *phases, "total")]
    for name, row in profiled.items():
        cells.append(
            (
                name,
                *[f"{row.get(phase, 0.0):.2f}" for phase in phases],
                f"{sum(row.values()):.2f}",
            )
        )
    return aligned(cells)


def flat_figures(
    args: argparse.Namespace,
    setup: dict[str, Any],
    start: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    overall: float,
) -> dict[str, Any]:
    settings: Settings = args.settings
    figures: dict[str, Any] = {
        "policy": args.policy,
        "methods": list(rows),
        "reward_model_accuracy": setup["reward"]["accuracy"],
        "reward_model_train_pairs": setup["reward"]["train_pairs"],
        "reward_model_seconds": round(setup["reward"]["seconds"], 1),
        "reward_model_trained_here": setup["reward"]["trained_here"],
        "reward_model_pairs_built_by": setup["reward"]["pairs_built_by"],
        "train_prompts": setup["train_prompts"],
        "eval_prompts": setup["eval_prompts"],
        "start_reward": start["evaluation"]["score_mean"],
        "start_reward_sem": start["evaluation"]["score_sem"],
        "start_response_length": start["evaluation"]["response_length"],
        "start_distinct_2": start["evaluation"]["distinct_2"],
        "start_repetition_rate": start["evaluation"]["repetition_rate"],
        "start_samples": start["evaluation"]["samples"][:2],
    }
    for name, row in rows.items():
        key = name.replace("-", "_")
        if "error" in row:
            figures[f"{key}_error"] = row["error"]
            continue
        for field, value in row.items():
            if value is None and field.startswith(("dpo_", "phase_")):
                continue  # DPO's own figures and PPO's profile, absent for the others
            if field.startswith("scores_"):
                continue  # per-prompt scores: only the intervals are kept
            if isinstance(value, dict):
                value = {k: round(v, 3) for k, v in value.items()}
            figures[f"{key}_{field}"] = round(value, 4) if isinstance(value, float) else value
    free_cores = max(0, (os.cpu_count() or 1) - setup["threads"])
    disturbed = [
        name
        for name, row in rows.items()
        if "error" not in row and row["train_other_cores"] > free_cores + DISTURBED_CORES
    ]
    figures |= {
        "verdict": verdict(rows, settings.steps),
        "commit": commit(),
        "settings": asdict(settings)
        | {"methods": {name: method_overrides(settings, METHODS[name]) for name in rows}},
        "other_load_cores_max": round(overall, 2),
        "disturbed_methods": disturbed,
        "total_minutes": round(setup["total_s"] / 60, 1),
        "machine": gpu_machine(resolve_device(args.device), setup["threads"]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return figures


def print_report(figures: dict[str, Any], start: dict[str, Any], rows: dict[str, Any]) -> None:
    settings = figures["settings"]
    accuracy = figures["reward_model_accuracy"]
    print()
    print(
        f"{figures['policy']} on {figures['machine']['device']} "
        f"({figures['machine']['threads']} threads), {settings['steps']} steps per "
        f"method, {settings['completions_per_step']} responses per step, "
        f"{settings['max_new_tokens']} new tokens, kl_coef {settings['kl_coef']:g}, lr "
        f"{settings['learning_rate']:g} (LoRA {settings['lora_learning_rate']:g}); reward "
        f"model test accuracy {_cell(accuracy, '.3f')}; {figures['eval_prompts']} eval "
        "prompts"
    )
    print(table(start, rows))
    print(
        "train s: the whole train call (load, reference copy, steps, save, register; DPO: "
        "plus sampling and scoring its pairs); loop s: the optimizer's steps (DPO: plus its "
        "sampling); s/episode = loop s / episodes; CPU s/ep: this process's CPU seconds in "
        "the whole train call per episode (what a busy neighbour changes least); gain: eval "
        "reward after - before, with its 95% bootstrap interval over the eval prompts; KL: "
        "to the starting policy, nats per response; repeats: share of responses that loop; "
        "other load: cores other processes kept busy while training."
    )
    shared, separate = rows.get("ppo"), rows.get("ppo-separate")
    if shared and separate and "error" not in shared and "error" not in separate:
        print(
            f"value model: shared {shared['s_per_episode']:.2f} s/episode, "
            f"{shared['peak_rss_mib']:.0f} MiB, gain {shared['reward_gain']:+.3f}; separate "
            f"{separate['s_per_episode']:.2f} s/episode, {separate['peak_rss_mib']:.0f} MiB, "
            f"gain {separate['reward_gain']:+.3f}"
        )
    profile = profile_table(rows)
    if profile is not None:
        print("\nPPO's seconds per step, by phase (mean over steps 2 and later):")
        print(profile)
    print()
    print("\n".join(figures["verdict"]))
    if figures["disturbed_methods"]:
        print(
            "WARNING: other processes competed for the benchmark's cores while "
            f"{', '.join(figures['disturbed_methods'])} trained; their timings measure the "
            "machine's load too."
        )


def benchmark(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    settings: Settings = args.settings
    overall_start: CpuClock = cpu_clock()
    threads = configure_threads(args.threads)
    overrides = base_overrides(args)
    workspace = open_workspace(root, overrides)
    reuse_model_cache(workspace, args.policy)
    train_count, eval_count = import_prompts(workspace, settings)
    print(
        f"Workspace {root}: {train_count} train and {eval_count} eval prompts; preparing "
        f"{args.policy} (converted once)...",
        flush=True,
    )
    if eval_count < settings.eval_prompts:
        raise UserError(
            f"Only {eval_count} of the {settings.eval_prompts} eval prompts asked for landed "
            "in the eval split; import more prompts or pass a smaller --eval-prompts."
        )
    policy_name, policy_location = register_policy(workspace, args.policy)
    if args.reward is not None:
        reward = reused_reward(args.reward)
    else:
        print(
            f"Training the reward model on {settings.reward_train_pairs} IMDB sentiment pairs...",
            flush=True,
        )
        reward = train_sentiment_reward(root / "reward-workspace", args)
    print(
        f"Reward model {reward['folder']}: test accuracy {_cell(reward['accuracy'], '.3f')} "
        f"({reward['seconds']:.0f} s)",
        flush=True,
    )
    results = root / "bench-optimize"
    results.mkdir(parents=True, exist_ok=True)
    state = {
        "root": str(root),
        "overrides": overrides,
        "settings": asdict(settings),
        "policy_name": policy_name,
        "policy_location": policy_location,
        "reward": reward,
        "eval_prompts": [[p.text, p.chat] for p in eval_prompts(workspace, settings.eval_prompts)],
        "results": str(results),
    }
    workspace.engine.dispose()
    state_file = results / "state.json"
    state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
    # Generous: a step of the slowest method takes about a minute on 2 CPU cores.
    timeout = settings.steps * 300 + 900
    start = run_child(START, state_file, results, timeout)
    if "error" in start:
        raise UserError(f"Evaluating the starting policy failed: {start['error']}")
    first = start["evaluation"]
    print(
        f"start: reward {first['score_mean']:.3f} +- {first['score_sem']:.3f}, length "
        f"{first['response_length']:.1f} ({first['eval_s']:.0f} s to evaluate)",
        flush=True,
    )
    rows: dict[str, dict[str, Any]] = {}
    for name in args.method_names:
        print(f"{name}: training for {settings.steps} steps...", flush=True)
        figures = run_child(name, state_file, results, timeout)
        rows[name] = figures if "error" in figures else derived(figures, start)
        if "error" not in figures:
            row = rows[name]
            print(
                f"{name}: {row['episodes']} episodes, {row['steps']} steps, reward "
                f"{row['reward_after']:.3f} ({row['reward_gain']:+.3f}), KL "
                f"{_cell(row['kl'], '.2f')}, {row['peak_rss_mib']:.0f} MiB, "
                f"{figures['process_s']:.0f} s in all",
                flush=True,
            )
    overall_end = cpu_clock()
    setup = {
        "reward": reward,
        "train_prompts": train_count,
        "eval_prompts": eval_count,
        "threads": threads,
        "total_s": overall_end.wall - overall_start.wall,
    }
    # Measured inside each child, where "other" means other than that method; measured
    # here, the children's own work would count as other processes'.
    overall = max(
        [row["train_other_cores"] for row in rows.values() if "error" not in row] or [0.0]
    )
    figures = flat_figures(args, setup, start, rows, overall)
    print_report(figures, start, rows)
    return figures


def main() -> int:
    args = parse_args()
    if args.only is not None:
        try:
            return run_only(args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    def run(folder: Path) -> dict[str, object]:
        resolve_device(args.device)  # an unusable device fails before the slow setup
        return benchmark(folder, args)

    return run_benchmark(args, "bench-optimize-", run)


if __name__ == "__main__":
    raise SystemExit(main())
