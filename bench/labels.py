"""Label efficiency: how good is the reward model after N human labels, and does
choosing which pairs get labelled help?

Without a full loop per point: a pool of responses is sampled once from the base policy
(the packaged SmolLM2-135M-Instruct on packaged IMDB prompts, K=4 samples of at most 32
new tokens, as in the loop) and cached (bench/labels_pool.py). Candidate pairs are two
different responses to one pool prompt; the simulated annotators' rule labels them (the
loop's oracle and Bradley-Terry noise, 0.1 by default). Reward models are trained on 64,
128, 256 and 512 labels chosen by each strategy (bench/labels_core.py), by the trainer
`rlhf train reward` uses with the loop's settings (bench/loop.py: 3 epochs, learning
rate 2e-4, batch 16, the packaged MiniLM backbone), and measured on 1,000 pairs of
held-out prompts against the noise-free oracle (its ties left out): pairwise accuracy,
ECE and Brier score of sigmoid(r_a - r_b). Each figure is the mean over seeds with a
95% Student-t interval over seeds (a seed decides the random order, the first batch,
the annotator's draws and the head's initialisation; the pool and held-out pairs stay).

Goal (issue 20): a selection strategy reaches random selection's 512-label accuracy
with at most 256 labels.

Runs piece by piece, each point merged into bench/results/labels.json as soon as it is
measured (with the commit, date and other processes' load of that point):

    python bench/labels.py                                   # random and uncertainty, seeds 0-2
    python bench/labels.py --strategies uncertainty-diverse --seeds 0,1,2 --sizes 64,128,256
    python bench/labels.py --strategies disagreement --seeds 0,1,2 --sizes 64,128,256
    python bench/labels.py --report                          # table and plot from the JSON

Budgets are epochs (steps are recorded with each point), never wall time, so a busy
machine makes a run slower but not different.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import commit, cpu_clock, cpu_model, machine, other_cores, write_json  # noqa: E402
from bench.labels_core import STRATEGIES, Point, Setup, run_strategy  # noqa: E402
from bench.labels_pool import Pool, PoolSettings, load_or_generate  # noqa: E402
from rlhf_train.config import RewardSettings  # noqa: E402
from rlhf_train.errors import UserError  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "labels.json"
PLOT = BENCH.parent / "docs" / "labels.png"
POOL = BENCH / ".cache" / "labels-pool.json"
# The [reward] section bench/loop.py writes into the loop's rlhf.toml.
LOOP_REWARD = RewardSettings(epochs=3.0, learning_rate=2e-4, batch_size=16)
# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy here).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    t = T_975.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


FIGURES = ("accuracy", "ece", "brier", "ensemble_accuracy")


def summarize(results: dict) -> dict:
    """Per task, strategy and label count: seeds, mean and 95% interval of each figure;
    and the goal's verdict per strategy."""
    summary: dict = {}
    for task, runs in results.get("runs", {}).items():
        table: dict = {}
        for strategy, seeds in runs.items():
            by_size: dict[int, list[dict]] = {}
            for points in seeds.values():
                for labels, point in points.items():
                    by_size.setdefault(int(labels), []).append(point)
            rows = {}
            for labels in sorted(by_size):
                row: dict = {"seeds": len(by_size[labels])}
                for figure in FIGURES:
                    values = [p["figures"].get(figure) for p in by_size[labels]]
                    if None in values:
                        continue  # ensemble_accuracy: only an ensemble strategy has it
                    mean, half = interval(values)
                    row[figure] = round(mean, 4)
                    row[f"{figure}_ci95"] = None if half is None else round(half, 4)
                row["train_seconds"] = round(
                    statistics.fmean(p["train_seconds"] for p in by_size[labels]), 1
                )
                row["ties"] = round(statistics.fmean(p["ties"] for p in by_size[labels]), 1)
                rows[str(labels)] = row
            table[strategy] = rows
        summary[task] = {"table": table, "goal": _goal(table)}
    return summary


def _goal(table: dict) -> dict:
    target_row = table.get("random", {}).get("512")
    if target_row is None:
        return {"target": None, "note": "random at 512 labels not measured yet"}
    target = target_row["accuracy"]
    verdicts = {}
    for strategy, rows in table.items():
        reached = [
            int(labels)
            for labels, row in rows.items()
            if int(labels) <= 256 and row["accuracy"] >= target
        ]
        verdicts[strategy] = {
            "labels_to_reach": min(reached) if reached else None,
            "met": bool(reached) and strategy != "random",
        }
    return {"target": target, "strategies": verdicts}


def print_table(summary: dict) -> None:
    for task, part in summary.items():
        print(f"task {task}: pairwise accuracy on held-out pairs (mean +- 95% t over seeds)")
        header = (
            f"{'strategy':<22} {'labels':>6} {'seeds':>5} {'accuracy':>16} {'ECE':>6} "
            f"{'Brier':>6} {'ties':>5} {'train s':>7}"
        )
        print(header)
        print("-" * len(header))
        for strategy, rows in part["table"].items():
            for labels, row in rows.items():
                half = row["accuracy_ci95"]
                spread = "" if half is None else f" +- {half:.3f}"
                print(
                    f"{strategy:<22} {labels:>6} {row['seeds']:>5} "
                    f"{row['accuracy']:>7.3f}{spread:<9} {row['ece']:>6.3f} {row['brier']:>6.3f} "
                    f"{row['ties']:>5.1f} {row['train_seconds']:>7.1f}"
                    + (
                        f"   ensemble mean: {row['ensemble_accuracy']:.3f}"
                        if "ensemble_accuracy" in row
                        else ""
                    )
                )
        goal = part["goal"]
        if goal.get("target") is not None:
            print(
                f"goal: reach random's 512-label accuracy {goal['target']:.3f} with <= 256 labels"
            )
            for strategy, verdict in goal["strategies"].items():
                if strategy != "random":
                    print(
                        f"  {strategy}: {'met' if verdict['met'] else 'NOT met'} "
                        f"(labels to reach: {verdict['labels_to_reach']})"
                    )


def plot(summary: dict, path: Path) -> None:
    """Accuracy against labels per strategy, with the 95% intervals, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    figure, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for strategy, rows in summary[task]["table"].items():
            labels = [int(n) for n in rows]
            accuracy = [row["accuracy"] for row in rows.values()]
            errors = [row["accuracy_ci95"] or 0.0 for row in rows.values()]
            seeds = min(row["seeds"] for row in rows.values())
            axis.errorbar(
                labels, accuracy, yerr=errors, marker="o", capsize=3,
                label=f"{strategy} ({seeds}+ seeds)",
            )  # fmt: skip
        target = summary[task]["goal"].get("target")
        if target is not None:
            axis.axhline(target, color="grey", linestyle=":", label="random at 512")
        axis.set_xscale("log", base=2)
        ticks = sorted({int(n) for rows in summary[task]["table"].values() for n in rows})
        axis.set_xticks(ticks, [str(n) for n in ticks])
        axis.minorticks_off()
        axis.set(
            xlabel="labels", ylabel="held-out pairwise accuracy (oracle)",
            title=f"Reward model per label, task {task} (95% t interval)",
        )  # fmt: skip
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _numbers(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--{name} takes whole numbers separated by commas, got {text!r}."
        ) from None
    if not values or min(values) < 0:
        raise UserError(f"--{name} needs at least one number of 0 or more, got {text!r}.")
    return values


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the pool and the machine, shared with bench/labels_head.py."""
    parser.add_argument("--train-prompts", type=int, default=1000, help="pool prompts to label")
    parser.add_argument("--heldout-prompts", type=int, default=250, help="pool prompts to measure")
    parser.add_argument("--pool", type=Path, default=POOL, help=f"pool cache (default {POOL})")
    parser.add_argument(
        "--models-cache", type=Path, default=BENCH / ".cache" / "models",
        help="where the converted default policy lives (converted there once if missing)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")


def load_pool(args: argparse.Namespace) -> tuple[PoolSettings, Pool, int]:
    """The pool the options name (sampled where the cache lacks it), its settings, and
    the torch threads configured."""
    from rlhf_train.models.builtin import BUILTIN_MODELS
    from rlhf_train.models.loading import configure_threads

    if args.train_prompts < 1 or args.heldout_prompts < 1:
        raise UserError("--train-prompts and --heldout-prompts need 1 or more.")
    threads = configure_threads(args.threads)
    settings = PoolSettings(train_prompts=args.train_prompts, heldout_prompts=args.heldout_prompts)
    policy = BUILTIN_MODELS[settings.policy].materialize(args.models_cache)
    return settings, load_or_generate(args.pool, settings, policy), threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default="random,uncertainty", help=", ".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="64,128,256,512", help="label counts to measure")
    parser.add_argument("--batch", type=int, default=64, help="labels chosen per retraining")
    parser.add_argument("--task", default="positive", choices=["positive", "negative", "shorter"])
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--heldout-pairs", type=int, default=1000)
    add_pool_arguments(parser)
    parser.add_argument(
        "--backbone", default="minilm-l6-v2", choices=["minilm-l6-v2", "smollm2-135m-instruct"],
        help="the reward model's packaged backbone (SmolLM2: the policy itself, 6x larger)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=float, default=LOOP_REWARD.epochs, help="reward.epochs (the loop's: 3)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=LOOP_REWARD.learning_rate,
        help="reward.learning_rate (the loop's: 2e-4)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--report", action="store_true", help="only print and plot the JSON")
    return parser.parse_args(argv)


def _load(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not JSON ({exc}); fix or move it before merging.") from exc


def check_mergeable(results: dict, measured_on: dict, out: Path) -> None:
    """Refuse to merge into `results` (read from `out`) when its points were measured on
    another pool or with other settings: the summary averages the points of one file."""
    if results.get("runs") and any(results.get(key) != value for key, value in measured_on.items()):
        raise UserError(
            f"{out} holds points measured on another pool or with other settings; "
            "pass the same --train-prompts, --heldout-prompts, --noise, --batch, --backbone, "
            "--epochs and --learning-rate, or another --out."
        )


def run(args: argparse.Namespace) -> int:
    results = _load(args.out)
    if args.report:
        results["summary"] = summarize(results)
        print_table(results["summary"])
        plot(results["summary"], args.plot)
        return 0
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if unknown := [s for s in strategies if s not in STRATEGIES]:
        raise UserError(f"Unknown strategies {unknown}; use some of: {', '.join(STRATEGIES)}.")
    seeds, sizes = _numbers(args.seeds, "seeds"), _numbers(args.sizes, "sizes")
    if any(size % args.batch for size in sizes if size) or min(sizes) < args.batch:
        raise UserError(
            f"--sizes must be multiples of --batch ({args.batch}) from {args.batch} up."
        )

    if args.epochs <= 0 or args.learning_rate <= 0:
        raise UserError("--epochs and --learning-rate need a number above 0.")

    from rlhf_train.models.builtin import BUILTIN_MODELS

    pool_settings, pool, threads = load_pool(args)
    backbone = str(BUILTIN_MODELS[args.backbone].materialize(args.models_cache))
    reward = replace(LOOP_REWARD, epochs=args.epochs, learning_rate=args.learning_rate)
    setup = Setup(pool, args.task, args.noise, backbone, reward, args.heldout_pairs)
    measured_on = {
        "pool": {
            **asdict(pool_settings),
            "train_candidate_pairs": len(setup.candidates),
            "near_duplicate_pairs": int(setup.duplicates.sum()),
            "heldout_pairs": len(setup.eval_pairs),
        },
        "reward_settings": asdict(reward),
        "backbone": args.backbone,
        "noise": args.noise,
        "batch": args.batch,
    }
    check_mergeable(results, measured_on, args.out)
    results.update(measured_on, interval="95% Student-t over seeds")
    results.setdefault("runs", {}).setdefault(args.task, {})
    for strategy in strategies:
        for seed in seeds:
            print(f"== {args.task} {strategy} seed {seed} ==", flush=True)
            slot = results["runs"][args.task].setdefault(strategy, {}).setdefault(str(seed), {})
            clock = [cpu_clock()]

            def record(point: Point, slot: dict = slot, clock: list = clock) -> None:
                now = cpu_clock()
                figures = asdict(point)
                del figures["chosen"]  # hundreds of indices, reproducible from the seed
                slot[str(point.labels)] = {
                    **figures,
                    "wall_seconds": round(now.wall - clock[0].wall, 1),
                    "other_cores_busy": round(other_cores(clock[0], now), 2),
                    "commit": commit(),
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
                    "machine": machine(("torch", "transformers", "trl"), threads=threads),
                }
                clock[0] = now
                results["cpu"] = cpu_model()
                results["summary"] = summarize(results)
                write_json(args.out, results)
                print(
                    f"  {point.labels} labels ({point.ties} ties, {point.steps} steps, "
                    f"{point.train_seconds} s): accuracy {point.figures['accuracy']:.3f}, "
                    f"ECE {point.figures['ece']:.3f}",
                    flush=True,
                )

            run_strategy(setup, strategy, seed, sizes, args.batch, on_point=record)
            plot(results["summary"], args.plot)
    print_table(results["summary"])
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
