"""Benchmark the whole loop: `rlhf simulate` from the packaged SmolLM2 on IMDB prompts.

Each scenario runs in a fresh workspace (its own subprocess, so memory and threads are
its own): round 1 is generated from the packaged SmolLM2-135M-Instruct on the packaged
IMDB prompts, then for each of `--rounds` rounds 3 simulated annotators make
`--labels-per-round` judgments through the app's database functions (preferring by the
VADER lexicon with Bradley-Terry noise), and `rounds next` retrains: export, MiniLM reward
model, PPO, evaluation on 64 held-out prompts, promotion, next round.

Per round the table gives the oracle figure of the current policy (the share of
responses the lexicon calls positive, or negative), the mean lexicon score, the reward
model's score, KL to the starting policy, distinct-2 and wall time. The goals, from the
issue: at least 0.90 positive after round 2 with distinct-2 at least 0.8 of the base
policy's, in under 60 minutes; and for the pair strategies, how many labels each needs
to reach the same oracle figure (linear interpolation between rounds, since each round
adds `--labels-per-round` labels).

Settings chosen for 2 CPU cores and written into each workspace's rlhf.toml (listed in
the JSON): overlap 1 (every label is a new pair: with a near-noiseless oracle a second
vote on a pair teaches little), 32 new tokens, PPO on a LoRA adapter (faster per episode
than full fine-tuning on CPU, bench/optimize.py) with a wall-clock budget per round, no
missing-end-token penalty (a 32-token continuation is a fine movie-review sentence), and
3 reward-model epochs (a few hundred pairs).

Run it from the repository root:

    python bench/loop.py                                  # the three scenarios below
    python bench/loop.py --scenarios positive-random      # one of them
    python bench/loop.py --quick                          # a smoke run; writes nothing

Scenarios: positive-random, negative-random, positive-uncertainty. Results go to
bench/results/loop.json and docs/loop.png (rewritten after every scenario, so a long run
keeps what it did).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_clock, cpu_model, other_cores, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "loop.json"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "loop.png"
SCENARIOS = {
    "positive-random": ("positive", "random"),
    "negative-random": ("negative", "random"),
    "positive-uncertainty": ("positive", "uncertainty"),
}
FIGURE = {"positive": "positive_share", "negative": "negative_share"}


def settings_toml(ppo_minutes: float, quick: bool) -> str:
    tokens = 12 if quick else 32
    return f"""
[round]
overlap = 1

[generation]
max_new_tokens = {tokens}
samples_per_prompt = 2

[reward]
epochs = 3.0
learning_rate = 0.0002
batch_size = 16

[optimize]
steps = 100000
learning_rate = 0.0003
batch_size = 16
max_new_tokens = {tokens}
kl_coef = 0.05
checkpoint_every = 10

[ppo]
# LoRA learns far more per episode from four epochs over each rollout than from one
# (bench/README.md, bench/optimize.py).
ppo_epochs = 4
minibatch_size = 8
missing_eos_penalty = 0.0

[evaluate]
n_prompts = {8 if quick else 64}
max_new_tokens = {tokens}
"""


def run_scenario(name: str, args: argparse.Namespace) -> dict:
    """One scenario in a fresh workspace, in a child process running `rlhf simulate`."""
    task, strategy = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix=f"loop-{name}-") as folder:
        root = Path(folder) / "ws"
        root.mkdir()
        (root / "rlhf.toml").write_text(settings_toml(args.ppo_minutes, args.quick))
        command = [
            sys.executable, "-m", "rlhf_train.cli", "--workspace", str(root), "simulate",
            "--task", task, "--annotators", "3", "--rounds", str(args.rounds),
            "--labels-per-round", str(args.labels_per_round), "--noise", str(args.noise),
            "--pair-strategy", strategy, "--lora", "--time-limit", str(args.ppo_minutes),
            "--no-progress",
        ]  # fmt: skip
        before, children_before = cpu_clock(), _children_cpu()
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        after, children_after = cpu_clock(), _children_cpu()
        if completed.returncode != 0:
            sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
            raise SystemExit(f"scenario {name} failed with exit code {completed.returncode}")
        summary_file = next((root / "reports" / "simulations").glob("*.json"))
        summary = json.loads(summary_file.read_text())
        curves = optimizer_curves(root)
    rounds = summary["rounds"]
    rows = []
    labels = 0
    for record in rounds:
        mine = (record["metrics"].get("figures") or {}).get("policy") or {}
        labels += record["labels"]
        rows.append(
            {
                "round": record["round"],
                "policy": record["policy"],
                "labels_total": labels,
                "figure": record["figure"],
                "sentiment_mean": mine.get("sentiment_mean"),
                "reward": record["reward"],
                "kl": record["kl"],
                "distinct_2": record["distinct_2"],
                "response_length": record["response_length"],
                "seconds": record["seconds"],
            }
        )
    base, last = rows[0], rows[-1]
    return {
        "task": task,
        "pair_strategy": strategy,
        "figure_name": FIGURE[task],
        "rounds": rows,
        "minutes": round(seconds / 60, 1),
        # The simulation is our child: its CPU is ours, not another process's.
        "other_cores_busy": round(
            max(0.0, other_cores(before, after) - (children_after - children_before) / seconds), 2
        ),
        "figure_base": base["figure"],
        "figure_final": last["figure"],
        "distinct_2_ratio": (
            last["distinct_2"] / base["distinct_2"] if base["distinct_2"] else None
        ),
        "optimizer_curves": curves,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def optimizer_curves(root: Path) -> list[dict]:
    """Per retraining, the optimizer's reward and KL at each step, from its JSON-lines log."""
    import sqlite3

    with sqlite3.connect(root / "prefloop.db") as connection:
        runs = connection.execute(
            "SELECT r.number, t.log_path FROM training_runs t JOIN rounds r ON r.id = t.round_id "
            "WHERE t.kind = 'ppo' AND t.status = 'succeeded' ORDER BY r.number"
        ).fetchall()
    curves = []
    for number, log_path in runs:
        steps = [
            json.loads(line)
            for line in Path(log_path).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        steps = [record for record in steps if "kl" in record and "score_mean" in record]
        curves.append(
            {
                "round": number,
                "step": [record["step"] for record in steps],
                "score_mean": [round(record["score_mean"], 4) for record in steps],
                "kl": [round(record["kl"], 4) for record in steps],
            }
        )
    return curves


def plot(results: dict, path: Path) -> None:
    """The oracle figure against labels, and the optimizer's reward and KL per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, scenario in results["scenarios"].items():
        rows = scenario["rounds"]
        left.plot(
            [row["labels_total"] for row in rows],
            [row["figure"] for row in rows],
            marker="o",
            label=f"{name} ({scenario['figure_name']})",
        )
        for curve in scenario.get("optimizer_curves", []):
            label = f"{name}, round {curve['round']}"
            middle.plot(curve["step"], curve["score_mean"], label=label)
            right.plot(curve["step"], curve["kl"], label=label)
    left.set(xlabel="labels", ylabel="oracle figure", title="Policy after each round")
    middle.set(xlabel="PPO step", ylabel="reward-model score", title="PPO: reward")
    right.set(xlabel="PPO step", ylabel="KL (nats per response)", title="PPO: KL to start")
    for axis in (left, middle, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def labels_to_reach(rows: list[dict], target: float) -> float | None:
    """Labels at which the oracle figure first reaches `target`, interpolating linearly
    between rounds; None if it never does."""
    for before, after in zip(rows, rows[1:], strict=False):
        if after["figure"] is None or before["figure"] is None:
            continue
        if after["figure"] >= target:
            if before["figure"] >= target:
                return before["labels_total"]
            share = (target - before["figure"]) / (after["figure"] - before["figure"])
            return before["labels_total"] + share * (after["labels_total"] - before["labels_total"])
    return None


def print_table(results: dict) -> None:
    header = (
        f"{'scenario':<22} {'round':>5} {'labels':>6} {'figure':>7} {'lexicon':>8} "
        f"{'reward':>7} {'KL':>6} {'dist-2':>6} {'min':>5}"
    )
    print(header)
    print("-" * len(header))

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, scenario in results["scenarios"].items():
        for row in scenario["rounds"]:
            print(
                f"{name:<22} {row['round']:>5} {row['labels_total']:>6} "
                f"{number(row['figure']):>7} {number(row['sentiment_mean']):>8} "
                f"{number(row['reward'], 2):>7} {number(row['kl'], 2):>6} "
                f"{number(row['distinct_2']):>6} {row['seconds'] / 60:>5.1f}"
            )
    for line in results.get("verdict", []):
        print(line)


def verdict(results: dict) -> list[str]:
    lines = []
    positive = results["scenarios"].get("positive-random")
    if positive:
        ratio = positive["distinct_2_ratio"]
        met = (
            (positive["figure_final"] or 0) >= 0.90
            and ratio is not None
            and ratio >= 0.8
            and positive["minutes"] < 60
        )
        lines.append(
            f"positive-random: {positive['figure_base']:.3f} -> {positive['figure_final']:.3f} "
            f"positive, distinct-2 at {ratio:.2f} of the base, {positive['minutes']} min: goal "
            f"(>= 0.90, >= 0.8x, < 60 min) {'met' if met else 'NOT met'}."
        )
    uncertain = results["scenarios"].get("positive-uncertainty")
    if positive and uncertain:
        target = min(positive["figure_final"], uncertain["figure_final"])
        random_labels = labels_to_reach(positive["rounds"], target)
        uncertain_labels = labels_to_reach(uncertain["rounds"], target)
        results["labels_to_reach"] = {
            "target": target,
            "random": random_labels,
            "uncertainty": uncertain_labels,
        }
        lines.append(
            f"labels to reach {target:.3f} positive: random {random_labels}, "
            f"uncertainty {uncertain_labels}."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--labels-per-round", type=int, default=256)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--ppo-minutes", type=float, default=10.0, help="PPO budget per round")
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    parser.add_argument("--out", type=Path, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if unknown := [name for name in names if name not in SCENARIOS]:
        raise SystemExit(f"unknown scenarios {unknown}; use: {', '.join(SCENARIOS)}")
    if args.quick:
        args.rounds, args.labels_per_round, args.ppo_minutes = 1, 12, 0.3
    out = args.out or (None if args.quick else RESULTS)
    results: dict = {
        "machine": cpu_model(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "policy": "smollm2-135m-instruct",
        "annotators": 3,
        "rounds_per_scenario": args.rounds,
        "labels_per_round": args.labels_per_round,
        "noise": args.noise,
        "ppo_minutes_per_round": args.ppo_minutes,
        "settings": settings_toml(args.ppo_minutes, args.quick).strip(),
        "scenarios": {},
    }
    for name in names:
        print(f"== {name} ==", flush=True)
        results["scenarios"][name] = run_scenario(name, args)
        results["verdict"] = verdict(results)
        if out is not None:
            write_json(out, results)
            plot(results, PLOT if out == RESULTS else out.with_suffix(".png"))
        print_table(results)


if __name__ == "__main__":
    main()
