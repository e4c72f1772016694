"""Benchmark `rlhf train reward`: how well, and how fast, the default reward model learns a
preference from our own pipeline on this machine.

Measures, in one run, the whole path a team takes from preference data to a reward
model, and what the model learned:

- import: `import_preferences` storing the pairs as a closed round in a fresh SQLite
  workspace;
- export: `export_preferences` writing the HF export, split by prompt;
- train: `train_reward` (what `rlhf train reward` runs) with the default backbone
  (MiniLM-L6, 22M parameters): backbone load, encoding, TRL's RewardTrainer, the test
  split's diagnostics, saving and registering the model.

It reports the test pairwise accuracy (the share of test pairs whose chosen response
scores higher), the trainer's seconds and pairs/s, the end-to-end seconds (import +
export + train_reward, diagnostics included), and the longer-wins baseline and
calibration error (ECE) from the diagnostics. Target: accuracy >= 0.93 in under 10
minutes end to end on the 2-core CPU machine the project runs on. Accuracy says whether
the pipeline (import, export, encoding, training, scoring) hands the model a learnable
signal and the model takes it; minutes say whether a lead can afford to retrain often.

The task is sentiment, built from the packaged IMDB reviews so it needs no download and
has a known right answer. A pair is a prompt (the first 8 words of a review) and two
responses of 40 to 60 words, from a positive and a negative review (different reviews);
chosen = the positive one. A response is the closing words of its review by default
(`--snippet-from end`), where reviewers state their verdict, or the words right after
the opening (`--snippet-from start`). The prompt opens the positive review in half of
the pairs and the negative one in the other half, so "which response belongs with the
prompt" says nothing about which is chosen; both responses draw their length from the
same range, so length says nothing either (the longer-wins baseline shows it: about
0.5). Every review is used at most once, so no test response was seen in training. The
exporter splits by a hash of the prompt; the pairs are picked so that exactly
`--train-pairs` land in train and `--test-pairs` in test, with different prompts in each.

What moves the accuracy, measured on this machine (one run each, 1000 test pairs unless
said, so about +-0.01): only the number of training pairs, slowly. 2000, 4000 and 6000
pairs x 1 epoch gave 0.891-0.904 (two runs: threads make training not bit-for-bit
repeatable), 0.906 (500 test pairs) and 0.914, the last in 10.4 minutes end to end, so
about 0.01-0.015 per doubling: 0.93 would take 12000 pairs or more, at least twice what
this machine trains in 10 minutes. Training does about 110 GFLOP/s (20 sequences of 90
padded tokens a second, 64 MFLOP per token), more than half the peak of 2 AVX2 cores, so
a faster loop cannot close that gap either. The other settings leave accuracy where it
is: 2 epochs 0.902 and learning rates 1e-4 to 4e-4 0.874-0.906 (500 test pairs); batch 8
with 10% warmup 0.896; no dropout 0.900; mean pooling (the pooling all-MiniLM-L6-v2 was
trained with) instead of the first token 0.899 against 0.897 in the same script; no
prompt at all 0.902; longer responses (100-140 words, 1000 pairs in a similar time)
0.886; shorter ones (20-30 words, 4000 pairs) 0.888; responses from the start of the
review 0.837 against 0.880 from the end (1000 pairs). A bag-of-words logistic regression
on the same pairs climbs from 0.83 at 2000 pairs to 0.887 at 9000: the task holds more
than MiniLM learns in 10 minutes; it is the data this backbone sees per minute on 2
cores that limits it. So the defaults take the cheapest budget, under 4 minutes: 2000
pairs, 1 epoch, learning rate 2e-4, batch 16, and max length 96 tokens, which holds 95%
of the inputs whole; `--train-pairs 6000` spends the whole 10 minutes.

Setup is not timed, only reported: reading the reviews, building the pairs, creating the
workspace. The run also records how many cores other processes kept busy meanwhile: on
a shared machine torch's threads slow down several times over when another process
takes a core (training here runs at about 11 pairs/s alone and under 3 beside a test
run), and such a run measures the machine's load rather than ours.

Run it from the repository root:

    python bench/reward.py            # prints a table, writes bench/results/reward.json
    python bench/reward.py --quick    # a smoke run of about a minute; writes no JSON
                                      # unless --out is given
    python bench/reward.py --train-pairs 4000 --epochs 1 --test-pairs 1000
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import datetime as dt
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import torch
from common import benchmark_main, cpu_clock, machine, other_cores

import rlhf_train.reward.train as reward_module
from db.engine import transaction
from db.prompts import content_hash
from db.text import storable
from rlhf_train.errors import UserError
from rlhf_train.export.preferences import ExportOptions, export_preferences
from rlhf_train.models.loading import resolve_device
from rlhf_train.prompts.sources import clean_review, labelled_reviews
from rlhf_train.prompts.split import is_test_prompt
from rlhf_train.reward.train import RewardOptions, RewardResult, train_reward
from rlhf_train.rounds.import_preferences import PreferenceRow, import_preferences
from rlhf_train.workspace import Workspace
from rlhf_train.workspace_setup import init_workspace

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "reward.json"
TARGET_ACCURACY = 0.93
TARGET_MINUTES = 10.0
SOURCE = "bench:imdb-sentiment"
# Other processes busier than this (in cores) on average make the timings suspect.
DISTURBED_CORES = 0.25
# How the accuracy compares with the reward models of the original RLHF seeds; the
# figure measured here is put in front of it.
SEED_MODELS_NOTE = (
    "The GPT-2 reward models in the original RLHF seeds report 97-98% on their own tasks; "
    "the figures do not compare directly: other data, and GPT-2 backbones of 124M "
    "parameters and up trained longer, against the 22M-parameter MiniLM-L6 default "
    "trained for minutes on 2 CPU cores. Here accuracy grows only with the training pairs, "
    "by about 0.01-0.015 per doubling (0.891-0.904, 0.906, 0.914 at 2000, 4000, 6000 pairs); "
    "other settings do not move it, and 0.93 would take at least twice the pairs 2 CPU cores "
    "train in 10 minutes."
)


@dataclass(frozen=True)
class Settings:
    """What a run trains on and with."""

    train_pairs: int
    test_pairs: int
    prompt_words: int
    snippet_words: tuple[int, int]
    snippet_from: str  # "start": right after the review's opening; "end": its last words
    max_length: int
    batch_size: int
    learning_rate: float
    epochs: float
    seed: int

    @property
    def test_fraction(self) -> float:
        return self.test_pairs / (self.train_pairs + self.test_pairs)


# The tuned defaults (see the report in the module's docstring) and the smoke run.
DEFAULTS = Settings(
    train_pairs=2000,
    test_pairs=1000,
    prompt_words=8,
    snippet_words=(40, 60),
    snippet_from="end",
    max_length=96,
    batch_size=16,
    learning_rate=2e-4,
    epochs=1.0,
    seed=0,
)
QUICK = replace(DEFAULTS, train_pairs=300, test_pairs=200)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="test accuracy and minutes of `rlhf train reward` on IMDB sentiment pairs"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run of about a minute ({QUICK.train_pairs} train and "
        f"{QUICK.test_pairs} test pairs); writes no JSON unless --out is given; the other "
        "flags still override",
    )

    def setting(flag: str, kind: type, help_text: str) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        parser.add_argument(
            flag, type=kind, default=None, help=f"{help_text} (default {getattr(DEFAULTS, name)})"
        )

    setting("--train-pairs", int, "pairs in the train split")
    setting("--test-pairs", int, "pairs in the test split")
    setting("--prompt-words", int, "words of a review that make a prompt")
    setting("--max-length", int, "reward.max_length: tokens per (prompt, response)")
    setting("--batch-size", int, "reward.batch_size: pairs per step")
    setting("--learning-rate", float, "reward.learning_rate")
    setting("--epochs", float, "reward.epochs")
    setting("--seed", int, "seed of the pairs, the export split and the training")
    parser.add_argument(
        "--snippet-words",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="words per response, drawn uniformly (default "
        f"{DEFAULTS.snippet_words[0]} {DEFAULTS.snippet_words[1]})",
    )
    parser.add_argument(
        "--snippet-from",
        choices=("start", "end"),
        default=None,
        help="where in a review its response is taken from: right after the prompt's words, "
        f"or the review's last words (default {DEFAULTS.snippet_from})",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="runtime.threads: 0 for all cores (default 0)"
    )
    parser.add_argument(
        "--device", default="auto", help="runtime.device: auto, cpu, cuda... (default auto)"
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="an empty or missing folder to build the workspace in and keep, e.g. to look "
        "at the model and the diagnostics' plots (default: a temporary folder)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output (default {DEFAULT_OUT}; none with --quick)",
    )
    args = parser.parse_args()
    base = QUICK if args.quick else DEFAULTS
    chosen = {
        name: getattr(args, name) if getattr(args, name) is not None else getattr(base, name)
        for name in Settings.__dataclass_fields__
    }
    chosen["snippet_words"] = tuple(chosen["snippet_words"])
    args.settings = settings = Settings(**chosen)
    for name in ("train_pairs", "test_pairs", "prompt_words", "batch_size"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= settings.snippet_words[0] <= settings.snippet_words[1]:
        parser.error("--snippet-words needs 1 <= MIN <= MAX")
    if settings.max_length < 8:
        parser.error("--max-length must be at least 8")
    if settings.learning_rate <= 0 or settings.epochs <= 0:
        parser.error("--learning-rate and --epochs must be above 0")
    if args.out is None and not args.quick:
        args.out = DEFAULT_OUT
    if args.workspace is not None and args.workspace.exists() and any(args.workspace.iterdir()):
        parser.error(f"--workspace {args.workspace} is not empty; pass a new folder")
    return args


# ---- the pairs (not timed) -------------------------------------------------------------


def read_reviews() -> tuple[list[list[str]], list[list[str]]]:
    """The packaged IMDB reviews as words, HTML line breaks removed: positive, negative."""
    positive: list[list[str]] = []
    negative: list[list[str]] = []
    for text, label in labelled_reviews("imdb"):
        (positive if label == 1 else negative).append(clean_review(text).split())
    return positive, negative


def build_pairs(
    positive: list[list[str]], negative: list[list[str]], settings: Settings
) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
    """Train and test rows, exactly as many as asked, in the split the exporter will put
    them in (it decides by the prompt's hash and the seed)."""
    rng = random.Random(settings.seed)
    shortest, longest = settings.snippet_words
    # Every review long enough for a prompt and the longest snippet, so that both sides of
    # every pair draw their snippet length from the same range.
    needed = settings.prompt_words + longest
    pools = [
        [words for words in reviews if len(words) >= needed] for reviews in (positive, negative)
    ]
    for pool in pools:
        rng.shuffle(pool)
    wanted = {"train": settings.train_pairs, "test": settings.test_pairs}
    rows: dict[str, list[PreferenceRow]] = {"train": [], "test": []}
    prompts: set[str] = set()

    def snippet(words: list[str]) -> str:
        length = rng.randint(shortest, longest)
        if settings.snippet_from == "end":
            return " ".join(words[-length:])
        start = settings.prompt_words
        return " ".join(words[start : start + length])

    for good, bad in zip(*pools, strict=False):
        opener = good if rng.random() < 0.5 else bad
        prompt = " ".join(opener[: settings.prompt_words])
        chosen, rejected = snippet(good), snippet(bad)
        if prompt in prompts:
            continue
        prompts.add(prompt)
        test = is_test_prompt(content_hash(storable(prompt)), settings.test_fraction, settings.seed)
        split = "test" if test else "train"
        if len(rows[split]) < wanted[split]:
            rows[split].append(PreferenceRow(prompt, chosen, rejected))
            if all(len(rows[name]) == wanted[name] for name in wanted):
                return rows["train"], rows["test"]
    raise UserError(
        f"The packaged reviews give only {len(rows['train'])} train and {len(rows['test'])} "
        f"test pairs of this shape; ask for fewer than {settings.train_pairs} train and "
        f"{settings.test_pairs} test pairs."
    )


# ---- the timed run ---------------------------------------------------------------------


def open_workspace(root: Path, settings: Settings, args: argparse.Namespace) -> Workspace:
    overrides = {
        # Never write benchmark rounds into a database that RLHF_DB_URL points at.
        "database.url": "",
        "runtime.threads": args.threads,
        "runtime.device": args.device,
        "reward.max_length": settings.max_length,
        "reward.batch_size": settings.batch_size,
        "reward.learning_rate": settings.learning_rate,
        "reward.epochs": settings.epochs,
        "reward.seed": settings.seed,
    }
    workspace = Workspace.open(root, overrides)
    init_workspace(workspace)
    return workspace


@contextmanager
def timed_calls(names: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Time the calls `train_reward` makes to the functions `names` of its module.

    `train_reward` looks them up in its module when it runs, so replacing them there
    with timed pass-throughs splits its seconds without changing what it does.
    """
    originals = {name: getattr(reward_module, name) for name in names}
    seconds = dict.fromkeys(names, 0.0)

    def timed(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - started

        return call

    for name in names:
        setattr(reward_module, name, timed(name))
    try:
        yield seconds
    finally:
        for name, original in originals.items():
            setattr(reward_module, name, original)


@dataclass(frozen=True)
class Run:
    import_s: float
    export_s: float
    train_reward_s: float  # the whole train_reward call
    load_s: float  # the backbone's load inside it
    diagnose_s: float  # scoring the test split and writing the diagnostics inside it
    result: RewardResult
    other_cores_total: float
    other_cores_train: float
    threads: int

    @property
    def total_s(self) -> float:
        return self.import_s + self.export_s + self.train_reward_s


def run(
    workspace: Workspace,
    settings: Settings,
    train: list[PreferenceRow],
    test: list[PreferenceRow],
) -> Run:
    """Import, export and train_reward, timed; the model is registered in `workspace`."""
    out = workspace.root / "exports" / "imdb-sentiment"
    start = cpu_clock()
    with transaction(workspace.sessions) as session:
        import_preferences(session, train + test, SOURCE)
    imported = cpu_clock()
    export = export_preferences(
        workspace, ExportOptions(out=out, test_fraction=settings.test_fraction, seed=settings.seed)
    )
    exported = cpu_clock()
    print(
        f"import {imported.wall - start.wall:.1f} s, export {exported.wall - imported.wall:.1f} s; "
        "training...",
        flush=True,
    )
    if (export.counts["rows_train"], export.counts["rows_test"]) != (len(train), len(test)):
        print(
            f"WARNING: the export split the pairs {export.counts['rows_train']} / "
            f"{export.counts['rows_test']}, not {len(train)} / {len(test)} as expected; has "
            "its split by prompt changed?",
            flush=True,
        )
    with timed_calls(("load_sequence_classifier", "diagnose")) as parts:
        result = train_reward(workspace, RewardOptions(data=str(out), progress=False))
    trained = cpu_clock()
    return Run(
        import_s=imported.wall - start.wall,
        export_s=exported.wall - imported.wall,
        train_reward_s=trained.wall - exported.wall,
        load_s=parts["load_sequence_classifier"],
        diagnose_s=parts["diagnose"],
        result=result,
        other_cores_total=other_cores(start, trained),
        other_cores_train=other_cores(exported, trained),
        threads=torch.get_num_threads(),
    )


# ---- report ----------------------------------------------------------------------------


def task(settings: Settings) -> str:
    where = "closing" if settings.snippet_from == "end" else "opening (after the prompt)"
    low, high = settings.snippet_words
    return (
        f"IMDB sentiment: prompt = the first {settings.prompt_words} words of a review; "
        f"chosen / rejected = the {where} {low}-{high} words of a positive / negative review"
    )


def summarize(settings: Settings, setup_s: float, timed: Run, device: str) -> dict[str, object]:
    metrics = timed.result.metrics
    diagnostics = timed.result.report.diagnostics if timed.result.report else {}
    accuracy = float(metrics["test_accuracy"])
    train_s = float(metrics["train_runtime_s"])
    meets_accuracy = accuracy >= TARGET_ACCURACY
    meets_time = timed.total_s < TARGET_MINUTES * 60
    return {
        "task": task(settings),
        "backbone": metrics["backbone"],
        "accuracy": round(accuracy, 4),
        "train_s": round(train_s, 1),
        "total_s": round(timed.total_s, 1),
        "pairs_per_s": round(float(metrics["train_pairs_per_s"]), 2),
        "train_pairs": int(metrics["train_pairs"]),
        "test_pairs": int(metrics["test_pairs"]),
        "train_steps": int(metrics["train_steps"]),
        "train_loss": round(float(metrics["train_loss"]), 4),
        "max_length": settings.max_length,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "epochs": settings.epochs,
        "seed": settings.seed,
        "prompt_words": settings.prompt_words,
        "snippet_from": settings.snippet_from,
        "snippet_words_min": settings.snippet_words[0],
        "snippet_words_max": settings.snippet_words[1],
        "test_fraction": round(settings.test_fraction, 4),
        "setup_s": round(setup_s, 1),
        "import_s": round(timed.import_s, 2),
        "export_s": round(timed.export_s, 2),
        "train_reward_s": round(timed.train_reward_s, 1),
        "load_s": round(timed.load_s, 2),
        "diagnose_s": round(timed.diagnose_s, 1),
        "train_reward_other_s": round(
            timed.train_reward_s - train_s - timed.load_s - timed.diagnose_s, 1
        ),
        "longer_wins_accuracy": round(float(diagnostics["length"]["longer_wins_accuracy"]), 4),
        "length_bias_alarm": bool(diagnostics["length"]["alarm"]),
        "ece": round(float(diagnostics["calibration"]["ece"]), 4),
        "target_accuracy": TARGET_ACCURACY,
        "target_minutes": TARGET_MINUTES,
        "meets_accuracy_target": meets_accuracy,
        "meets_time_target": meets_time,
        "meets_target": meets_accuracy and meets_time,
        "other_load_cores": round(timed.other_cores_total, 2),
        "train_other_load_cores": round(timed.other_cores_train, 2),
        "disturbed": max(timed.other_cores_total, timed.other_cores_train) > DISTURBED_CORES,
        "note": f"Ours: {accuracy:.1%} test pairwise accuracy. {SEED_MODELS_NOTE}",
        "machine": machine(
            ("torch", "transformers", "trl", "datasets"), threads=timed.threads, device=device
        ),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def table(rows: list[tuple[str, str, str]]) -> str:
    header = ("step", "seconds", "figures")
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        line = "  ".join((row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2]))
        lines.append(line.rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(figures: dict[str, Any]) -> None:
    train_s = figures["train_s"]
    rows = [
        ("import_preferences (SQLite)", f"{figures['import_s']:.1f}", ""),
        (
            "export_preferences (hf)",
            f"{figures['export_s']:.1f}",
            f"{figures['train_pairs']} train / {figures['test_pairs']} test pairs",
        ),
        (
            "train_reward, all of it",
            f"{figures['train_reward_s']:.1f}",
            f"other load {figures['train_other_load_cores']:.2f} cores",
        ),
        ("  backbone load", f"{figures['load_s']:.1f}", ""),
        (
            "  RewardTrainer.train",
            f"{train_s:.1f}",
            f"{figures['pairs_per_s']:.2f} pairs/s, {figures['train_steps']} steps, "
            f"loss {figures['train_loss']:.3f}",
        ),
        (
            "  diagnostics on the test split",
            f"{figures['diagnose_s']:.1f}",
            f"accuracy {figures['accuracy']:.3f}, longer wins "
            f"{figures['longer_wins_accuracy']:.3f}, ECE {figures['ece']:.3f}",
        ),
        ("  encoding, saving, registering", f"{figures['train_reward_other_s']:.1f}", ""),
        (
            "end to end",
            f"{figures['total_s']:.1f}",
            f"other load {figures['other_load_cores']:.2f} cores",
        ),
    ]
    print()
    print(
        f"{figures['backbone']}, {figures['train_pairs']} train pairs x {figures['epochs']:g} "
        f"epochs, max length {figures['max_length']}, batch {figures['batch_size']}, "
        f"lr {figures['learning_rate']:g}, {figures['machine']['threads']} threads on "
        f"{figures['machine']['device']}; setup (not timed) {figures['setup_s']:.1f} s"
    )
    print(table(rows))

    def verdict(key: str) -> str:
        return "PASS" if figures[key] else "FAIL"

    print(
        f"test pairwise accuracy: {figures['accuracy']:.3f} on {figures['test_pairs']} pairs "
        f"(target >= {TARGET_ACCURACY}): {verdict('meets_accuracy_target')}"
    )
    print(
        f"end to end: {figures['total_s'] / 60:.1f} min (target < {TARGET_MINUTES:g}): "
        f"{verdict('meets_time_target')}"
    )
    print(
        f"longer-wins baseline {figures['longer_wins_accuracy']:.3f}, calibration error (ECE) "
        f"{figures['ece']:.3f}"
    )
    if figures["disturbed"]:
        print(
            f"WARNING: other processes kept more than {DISTURBED_CORES} cores busy during the "
            "run, so the timings measure the machine's load too; rerun on an idle machine."
        )


# ---- main ------------------------------------------------------------------------------


def benchmark(root: Path, args: argparse.Namespace) -> dict[str, object]:
    settings: Settings = args.settings
    started = time.perf_counter()
    positive, negative = read_reviews()
    train, test = build_pairs(positive, negative, settings)
    workspace = open_workspace(root, settings, args)
    device = resolve_device(workspace.config.runtime.device)
    setup_s = time.perf_counter() - started
    print(
        f"{len(train)} train and {len(test)} test pairs from {len(positive) + len(negative)} "
        f"IMDB reviews, workspace {root} (setup {setup_s:.1f} s, not timed)",
        flush=True,
    )
    datasets.disable_progress_bars()
    figures = summarize(settings, setup_s, run(workspace, settings, train, test), device)
    print_report(figures)
    return figures


main = benchmark_main(parse_args, "bench-reward-", benchmark)


if __name__ == "__main__":
    raise SystemExit(main())
