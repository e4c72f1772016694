"""Rank-4 against pairs: reward-model accuracy per annotation and per minute of
annotator time (issue 16).

One point: a fresh SQLite workspace holds one round of N tasks (overlap 1), either
pairwise (two responses each) or ranking (K responses each); a simulated annotator
judges every task through the app's functions (next_pair / record_judgment: a pair by
Bradley-Terry, a ranking by Plackett-Luce, both at noise 0.1 on the loop's VADER
oracle, task "positive"); `rlhf export`'s code turns the judgments into preference rows
(a ranking of K gives K(K-1)/2 pairs; ties dropped); a reward model is fitted on those
rows and scored on 2,000 held-out pairs against the noise-free oracle (its ties left
out).

Responses are the first 40 words of the packaged IMDB reviews (20,000 for tasks,
5,000 held out), not policy samples: a review pool has the spread of sentiment the
oracle rewards without an hour of sampling. The reward model is a Bradley-Terry
logistic model on hashed word and word-pair counts (numpy, 2^14 features, L2 1e-3,
full-batch gradient descent), not the MiniLM one `rlhf train reward` trains: it
measures what the labels teach, in seconds per point, so both kinds can be compared at
several budgets and seeds. Annotator time: a task costs the reading of its responses,
`--seconds-per-response` each (default 15 s), so a pair is 30 s and a ranking of 4 is
60 s (the issue's accounting; deciding is taken as free for both).

    flock /tmp/bench.lock .venv/bin/python bench/rank_labels.py
    flock /tmp/bench.lock .venv/bin/python bench/rank_labels.py --quick
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import commit, machine, write_json  # noqa: E402
from db.engine import transaction  # noqa: E402
from db.models import Model, Prompt, Round  # noqa: E402
from db.ranking import NewTask, add_tasks  # noqa: E402
from db.rounds import NewPair, NewSample, add_samples_and_pairs  # noqa: E402
from db.users import create_user  # noqa: E402
from rlhf_train.export.preferences import ExportOptions, export_preferences  # noqa: E402
from rlhf_train.judgments.simulated import TASKS, SimulatedAnnotator, annotate  # noqa: E402
from rlhf_train.prompts.sources import packaged_reviews, review_opening  # noqa: E402
from rlhf_train.workspace import Workspace  # noqa: E402
from rlhf_train.workspace_setup import init_workspace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "rank_labels.json"
DIMENSIONS = 1 << 14
HELD_OUT_PAIRS = 2000


def _pool() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Task responses and held-out responses with their oracle scores."""
    texts = [review_opening(review, 40) for review in packaged_reviews("imdb")]
    random.Random(0).shuffle(texts)
    scores = np.array(TASKS["positive"](texts))
    return texts[:20000], scores[:20000], texts[20000:25000], scores[20000:25000]


def _features(texts: list[str]) -> np.ndarray:
    """Hashed word and word-pair counts, each row of unit length."""
    matrix = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    for row, text in enumerate(texts):
        words = text.lower().split()
        for token in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            matrix[row, zlib.crc32(token.encode()) % DIMENSIONS] += 1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-9)


def _fit(chosen: np.ndarray, rejected: np.ndarray, steps: int = 300) -> np.ndarray:
    """Bradley-Terry weights: maximise log sigmoid(w . (chosen - rejected)) - L2."""
    diff = chosen - rejected
    weights = np.zeros(DIMENSIONS, dtype=np.float32)
    for _ in range(steps):
        margin = diff @ weights
        grad = -(diff.T @ (1.0 / (1.0 + np.exp(margin)))) / len(diff) + 1e-3 * weights
        weights -= 2.0 * grad
    return weights


def _held_out(texts: list[str], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12345)
    a = rng.integers(0, len(texts), HELD_OUT_PAIRS * 2)
    b = rng.integers(0, len(texts), HELD_OUT_PAIRS * 2)
    keep = scores[a] != scores[b]
    a, b = a[keep][:HELD_OUT_PAIRS], b[keep][:HELD_OUT_PAIRS]
    features = _features(texts)
    return features[a], features[b], np.sign(scores[a] - scores[b])


def _round(workspace: Workspace, texts: list[str], k: int, tasks: int, seed: int) -> None:
    """Round 1: `tasks` tasks of k pool responses (k = 2: pairs), overlap 1."""
    rng = random.Random(seed)
    drawn = rng.sample(range(len(texts)), tasks * k)
    with transaction(workspace.sessions) as session:
        policy = Model(kind="policy", name="pool", path="/pool")
        session.add(policy)
        session.flush()
        kind = dict(kind="ranking", rank_k=k) if k >= 3 else {}
        round_ = Round(number=1, policy_id=policy.id, overlap=1, **kind)
        session.add(round_)
        session.flush()
        for task in range(tasks):
            prompt = Prompt(text=f"Task {task}", source="bench", content_hash=f"bench-{task}")
            session.add(prompt)
            session.flush()
            samples = [
                NewSample(prompt.id, policy.id, texts[i], {}, 0, 40, True)
                for i in drawn[task * k : (task + 1) * k]
            ]
            if k >= 3:
                add_tasks(session, round_, samples, [NewTask(tuple(range(k)))])
            else:
                add_samples_and_pairs(session, round_, samples, [NewPair(0, 1, "random")])
        user = create_user(session, "sim-1", "annotator", "bench-password")
        return user.id


def _point(folder: Path, texts, k: int, tasks: int, seed: int, noise: float, held) -> dict:
    started = time.perf_counter()
    workspace = Workspace.open(folder / f"k{k}-n{tasks}-s{seed}")
    init_workspace(workspace)
    user = _round(workspace, texts, k, tasks, seed)
    team = [SimulatedAnnotator(user, "sim-1", TASKS["positive"], noise, 0.0, random.Random(seed))]
    made = annotate(workspace, team, tasks)
    out = workspace.root / "exports" / "labels"
    result = export_preferences(
        workspace, ExportOptions(out=out, formats=("jsonl",), test_fraction=0.0, seed=seed)
    )
    rows = [json.loads(line) for line in (out / "data" / "train.jsonl").open()]
    weights = _fit(_features([r["chosen"] for r in rows]), _features([r["rejected"] for r in rows]))
    a, b, truth = held
    accuracy = float((np.sign((a - b) @ weights) == truth).mean())
    workspace.engine.dispose()
    return {
        "k": k,
        "annotations": made,
        "pairs": len(rows),
        "accuracy": accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "counts": {key: result.counts.get(key) for key in ("rankings", "ranking_pairs")},
    }


def _interval(values: list[float]) -> float:
    """Half width of a 95% Student-t interval over seeds (t for 2 to 5 seeds)."""
    if len(values) < 2:
        return 0.0
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(values), 2.0)
    return t * statistics.stdev(values) / len(values) ** 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=4, help="responses per ranking (default 4)")
    parser.add_argument("--sizes", default="25,50,100,200,400", help="annotations per point")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seconds-per-response", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="sizes 25,50 and one seed")
    parser.add_argument("--workspace", type=Path, help="keep the workspaces here")
    args = parser.parse_args()
    sizes = [25, 50] if args.quick else [int(s) for s in args.sizes.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    texts, _scores, held_texts, held_scores = _pool()
    held = _held_out(held_texts, held_scores)
    import tempfile

    folder = args.workspace or Path(tempfile.mkdtemp(prefix="rank-labels-"))
    points = []
    for k in (2, args.k):
        for size in sizes:
            for seed in seeds:
                point = _point(folder, texts, k, size, seed, args.noise, held)
                point["minutes"] = size * k * args.seconds_per_response / 60
                point["seed"] = seed
                points.append(point)
                print(json.dumps(point), flush=True)
    print()
    print("| kind | annotations | annotator minutes | pairs trained on | accuracy (95% CI) |")
    print("|---|---:|---:|---:|---:|")
    for k in (2, args.k):
        for size in sizes:
            mine = [p for p in points if p["k"] == k and p["annotations"] == size]
            if not mine:
                continue
            accuracy = [p["accuracy"] for p in mine]
            name = "pairwise" if k == 2 else f"rank-{k}"
            print(
                f"| {name} | {size} | {mine[0]['minutes']:.1f} | "
                f"{statistics.mean(p['pairs'] for p in mine):.0f} | "
                f"{statistics.mean(accuracy):.3f} ± {_interval(accuracy):.3f} |"
            )
    if not args.quick:
        write_json(
            RESULTS,
            {
                "points": points,
                "commit": commit(),
                "noise": args.noise,
                "seconds_per_response": args.seconds_per_response,
                **machine(("numpy",)),
            },
        )
        print(f"Wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
