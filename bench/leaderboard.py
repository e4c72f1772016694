"""Benchmark the leaderboard's fit (rlhf_train.judgments.ratings) on a million votes.

Synthetic votes from known Bradley–Terry strengths among 20 policies: 250,000 prompts,
each answered by one random pair of policies and judged 4 times (1,000,000 votes; up to
10% ties). Measured in one run:

- fit: the maximum-likelihood ratings alone (fit_leaderboard with a single resample, so
  this includes the aggregation of the votes): target under 5 s;
- intervals: the same call with 1,000 bootstrap resamples over prompts, less the fit:
  target under 60 s;
- the same two with style control (response lengths drawn per policy), reported only;
- coverage: the share of the 19 non-anchor policies whose true rating lies inside its
  95% interval (one draw, so a count out of 19, not a coverage estimate: the test suite
  checks coverage over 200 draws).

The votes come from a seeded generator, so every run fits the same data; only the wall
times depend on the machine and on how busy other processes kept it (reported).

    python bench/leaderboard.py            # prints a table, writes bench/results/leaderboard.json
    python bench/leaderboard.py --votes 100000 --out /tmp/lb.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import numpy as np
from common import cpu_clock, machine, other_cores, run_benchmark

from rlhf_train.judgments.ratings import SCALE, fit_leaderboard
from rlhf_train.judgments.votes import PolicyVotes

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "leaderboard.json"
POLICIES = 20
VOTES_PER_PROMPT = 4
TIE_SHARE = 0.1
RESAMPLES = 1000
TARGET_FIT_SECONDS = 5.0
TARGET_INTERVAL_SECONDS = 60.0
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="seconds of the leaderboard's fit and intervals")
    parser.add_argument("--votes", type=int, default=1_000_000, help="judgments (default 1000000)")
    parser.add_argument(
        "--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples ({RESAMPLES})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default %(default)s)"
    )
    args = parser.parse_args()
    if args.votes < VOTES_PER_PROMPT * POLICIES or args.resamples < 1:
        parser.error(f"--votes must be at least {VOTES_PER_PROMPT * POLICIES}, --resamples >= 1")
    args.workspace = None  # run_benchmark's temporary folder; nothing is written there
    return args


def synthetic_votes(n_votes: int, rng: np.random.Generator) -> tuple[PolicyVotes, np.ndarray]:
    """Votes and the true strengths (policy 0, the anchor, at 0)."""
    strengths = np.concatenate([[0.0], rng.normal(0.0, 0.7, POLICIES - 1)])
    n_prompts = n_votes // VOTES_PER_PROMPT
    first = rng.integers(0, POLICIES, n_prompts)
    second = (first + rng.integers(1, POLICIES, n_prompts)) % POLICIES
    prompt = np.repeat(np.arange(n_prompts), VOTES_PER_PROMPT)
    a, b = first[prompt], second[prompt]
    p_a = 1.0 / (1.0 + np.exp(strengths[b] - strengths[a]))
    # Ties take a share of the smaller side from both sides, so E[outcome] = p_a stays
    # the Bradley-Terry probability that a tie-as-half fit estimates.
    tie = TIE_SHARE * 2.0 * np.minimum(p_a, 1.0 - p_a)
    draw = rng.random(len(a))
    outcome = np.where(draw < p_a - tie / 2, 1.0, np.where(draw < p_a + tie / 2, 0.5, 0.0))
    typical = rng.integers(30, 200, POLICIES)
    length_a = np.round(typical[a] * rng.lognormal(0, 0.3, len(a)))
    length_b = np.round(typical[b] * rng.lognormal(0, 0.3, len(a)))
    votes = PolicyVotes(
        names=[f"policy-{i:02d}" for i in range(POLICIES)],
        policy_a=a,
        policy_b=b,
        outcome=outcome,
        prompt=prompt,
        length_a=length_a,
        length_b=length_b,
        weight=np.ones(len(a)),
    )
    return votes, strengths


def timed(votes: PolicyVotes, resamples: int, style: bool):
    before = cpu_clock()
    started = time.perf_counter()
    board = fit_leaderboard(votes, style_control=style, resamples=resamples, seed=SEED)
    seconds = time.perf_counter() - started
    return board, seconds, other_cores(before, cpu_clock())


def benchmark(args: argparse.Namespace) -> dict[str, object]:
    votes, strengths = synthetic_votes(args.votes, np.random.default_rng(SEED))
    figures: dict[str, object] = {"votes": len(votes), "policies": POLICIES}
    figures["prompts"] = args.votes // VOTES_PER_PROMPT
    figures["resamples"] = args.resamples
    busy = []
    for style, label in ((False, "plain"), (True, "style_control")):
        _, fit_seconds, cores = timed(votes, 1, style)
        board, total_seconds, more_cores = timed(votes, args.resamples, style)
        busy += [cores, more_cores]
        figures[f"{label}_fit_seconds"] = round(fit_seconds, 3)
        figures[f"{label}_interval_seconds"] = round(max(0.0, total_seconds - fit_seconds), 3)
        if not style:
            truth = 1000.0 + SCALE * strengths
            inside = [
                r.low <= truth[int(r.name.split("-")[1])] <= r.high
                for r in board.ratings
                if r.name != board.anchor
            ]
            figures["covered"] = int(sum(inside))
            figures["intervals"] = len(inside)
            figures["median_interval_width"] = round(
                float(np.median([r.high - r.low for r in board.ratings if r.name != board.anchor])),
                1,
            )
        else:
            figures["length_coefficient"] = round(float(board.length_coefficient), 4)
    figures["target_fit_seconds"] = TARGET_FIT_SECONDS
    figures["target_interval_seconds"] = TARGET_INTERVAL_SECONDS
    figures["other_cores_busy"] = round(max(busy), 2)
    figures["machine"] = machine(("numpy",))
    figures["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(table(figures))
    return figures


def table(figures: dict[str, object]) -> str:
    rows = [
        ("variant", "votes", "fit s", "intervals s", "targets", "covered"),
        (
            "plain",
            f"{figures['votes']:,}",
            str(figures["plain_fit_seconds"]),
            str(figures["plain_interval_seconds"]),
            f"{TARGET_FIT_SECONDS:g} s / {TARGET_INTERVAL_SECONDS:g} s",
            f"{figures['covered']} of {figures['intervals']}",
        ),
        (
            "style control",
            f"{figures['votes']:,}",
            str(figures["style_control_fit_seconds"]),
            str(figures["style_control_interval_seconds"]),
            "(reported)",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(
        f"{figures['resamples']} resamples over {figures['prompts']:,} prompts, {POLICIES} "
        f"policies; other processes kept {figures['other_cores_busy']} cores busy."
    )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    return run_benchmark(args, "bench-leaderboard-", lambda _folder: benchmark(args))


if __name__ == "__main__":
    raise SystemExit(main())
