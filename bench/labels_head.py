"""A lever of bench/labels.py, measured: a frozen MiniLM with a linear Bradley-Terry head
against the fine-tuned reward model, on the same pool, labels and held-out pairs.

With a few hundred labels, fitting only a linear head on frozen sentence features is
the textbook way to spend labels well. Each response is embedded once (mean-pooled last
hidden states of the reward backbone, with or without its prompt, plus its length in
tokens so that a length task has a feature for it); the head is fitted by L-BFGS on the
logistic loss of r(chosen) - r(rejected) with an L2 penalty on standardized features.
Random selection only, as labels.py's random: the question is the model, not the pairs.

    python bench/labels_head.py --task positive --seeds 0,1,2 --l2 0.01,0.1
    python bench/labels_head.py --inputs response,pair

Results go to bench/results/labels-head.json (mean and 95% t interval over seeds).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import commit, machine, write_json  # noqa: E402
from bench.labels import LOOP_REWARD, _numbers, add_pool_arguments, interval, load_pool  # noqa: E402
from bench.labels_core import Pairs, Responses, Setup, Trained, run_strategy  # noqa: E402
from rlhf_train.errors import UserError  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "labels-head.json"
INPUTS = ("response", "pair")  # the response alone, or (prompt, response) as a text pair


class FrozenFeatures:
    """Mean-pooled backbone features of each (prompt, response), computed once."""

    def __init__(self, backbone: str, inputs: str, max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(backbone)
        self.encoder = AutoModel.from_pretrained(backbone).eval()
        self.inputs, self.max_length = inputs, max_length
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def _encode(self, keys: list[tuple[str, str]]) -> None:
        for start in range(0, len(keys), 64):
            chunk = keys[start : start + 64]
            texts = [response for _, response in chunk]
            pairs = [prompt for prompt, _ in chunk] if self.inputs == "pair" else None
            batch = self.tokenizer(
                *([pairs, texts] if pairs else [texts]),
                padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            )  # fmt: skip
            with torch.no_grad():
                hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            # Unscaled: the head standardizes every feature. With "pair" the count includes
            # the prompt's tokens, which both responses of a pair share: the head only ever
            # sees differences within a pair, so the length it learns is the response's.
            tokens = mask.sum(1)
            for key, row, length in zip(chunk, pooled.numpy(), tokens.numpy(), strict=True):
                self.cache[key] = np.concatenate([row, length])

    def __call__(self, responses: Responses) -> np.ndarray:
        keys = [
            (prompt if self.inputs == "pair" else "", text)
            for prompt, text in zip(responses.prompts, responses.texts, strict=True)
        ]
        self._encode([k for k in dict.fromkeys(keys) if k not in self.cache])
        return np.stack([self.cache[k] for k in keys])


def head_trainer(features: FrozenFeatures, l2: float):
    """A labels_core trainer: a linear Bradley-Terry head on frozen features."""

    def train(
        backbone: str, responses: Responses, pairs: Pairs, labels: np.ndarray, *_: object
    ) -> Trained:
        started = time.perf_counter()
        x = torch.tensor(features(responses), dtype=torch.float64)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        keep = labels != 0
        a, b = torch.tensor(pairs.a[keep]), torch.tensor(pairs.b[keep])
        sign = torch.tensor(labels[keep], dtype=torch.float64)
        weights = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            gap = (z[a] - z[b]) @ weights
            value = torch.nn.functional.softplus(-sign * gap).mean() + l2 * weights.square().sum()
            value.backward()
            return value

        optimizer.step(loss)
        fitted = weights.detach()

        def score(target: Responses) -> np.ndarray:
            features_of = torch.tensor(features(target), dtype=torch.float64)
            return (((features_of - mean) / scale) @ fitted).numpy()

        return Trained(score, 1, time.perf_counter() - started, int(keep.sum()))

    return train


def measure_heads(
    setup: Setup, inputs: Sequence[str], l2s: Sequence[float], seeds: Sequence[int],
    sizes: Sequence[int],
) -> dict:  # fmt: skip
    """Accuracy and ECE per head variant and label count, over seeds."""
    table: dict = {}
    for name in inputs:
        features = FrozenFeatures(setup.backbone, name, setup.settings.max_length)
        for l2 in l2s:
            per_size: dict[int, list] = {}
            for seed in seeds:
                for point in run_strategy(
                    setup, "random", seed, sizes, trainer=head_trainer(features, l2)
                ):
                    per_size.setdefault(point.labels, []).append(point.figures)
            variant = table.setdefault(f"{name}, l2 {l2}", {})
            for size, figures in sorted(per_size.items()):
                accuracy, half = interval([f["accuracy"] for f in figures])
                ece, _ = interval([f["ece"] for f in figures])
                variant[str(size)] = {
                    "seeds": len(figures), "accuracy": round(accuracy, 3),
                    "accuracy_ci95": None if half is None else round(half, 3),
                    "ece": round(ece, 3),
                }  # fmt: skip
                print(f"{name:<9} l2 {l2:<6} {size:>4} labels: {accuracy:.3f} ± {half or 0:.3f}")
    return table


def _penalties(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--l2 takes numbers separated by commas, got {text!r}.") from None
    if not values or min(values) < 0:
        raise UserError(f"--l2 needs at least one penalty of 0 or more, got {text!r}.")
    return values


def run(argv: list[str] | None = None) -> int:
    from rlhf_train.models.builtin import BUILTIN_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="positive", choices=["positive", "negative", "shorter"])
    parser.add_argument("--inputs", default="response,pair", help=", ".join(INPUTS))
    parser.add_argument("--l2", default="0.01,0.1", help="L2 penalties, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="64,128,256,512")
    add_pool_arguments(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    inputs = [name.strip() for name in args.inputs.split(",") if name.strip()]
    if unknown := [name for name in inputs if name not in INPUTS]:
        raise UserError(f"Unknown --inputs {unknown}; use some of: {', '.join(INPUTS)}.")
    l2s = _penalties(args.l2)
    _settings, pool, threads = load_pool(args)
    backbone = str(BUILTIN_MODELS["minilm-l6-v2"].materialize(args.models_cache))
    setup = Setup(pool, args.task, 0.1, backbone, LOOP_REWARD)
    table = measure_heads(
        setup, inputs, l2s, _numbers(args.seeds, "seeds"), _numbers(args.sizes, "sizes")
    )
    write_json(
        args.out,
        {
            "task": args.task, "pool_prompts": [args.train_prompts, args.heldout_prompts],
            "heldout_pairs": len(setup.eval_pairs), "noise": setup.noise, "selection": "random",
            "interval": "95% Student-t over seeds", "table": table, "commit": commit(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "machine": machine(("torch", "transformers"), threads=threads),
        },
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
