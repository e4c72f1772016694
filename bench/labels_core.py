"""The core of bench/labels.py: candidate pairs, simulated labels, reward models trained
on the labels a strategy chooses, and their accuracy and calibration on held-out pairs.

Everything here works on a Pool (bench/labels_pool.py) and a reward backbone folder, so
the test runs it on a tiny pool with a tiny backbone, and the benchmark on the real one.

Strategies choose which candidate pairs (two different responses to one prompt of the
pool) get a label, in batches:

- random: a seeded permutation of the candidates; n labels are its first n, so the
  sizes of one seed are nested;
- uncertainty: the first batch as random's (no reward model exists yet, as in round 1);
  then, before each batch, a reward model is trained on every label so far and the batch
  is the unlabelled pairs with the smallest |r_a - r_b|, each response in at most one
  pair of a batch (the rule of pair_most_uncertain in rlhf_train/rounds/pairing.py);
- uncertainty-diverse: as uncertainty, with at most one pair per prompt in a batch, so a
  batch does not spend its labels on a few prompts whose responses all score alike;
- uncertainty-distinct: as uncertainty, but pairs of near-duplicate responses (word
  overlap at or above NEAR_DUPLICATE) are never chosen: their close scores are right,
  and a label on them teaches little.
- disagreement: the first batch as random's; then, before each batch, an ensemble of
  ENSEMBLE reward models is trained on the labels so far (the first exactly as
  uncertainty's model, the others with their own seeds on bootstrap resamples of the
  labels, so that they differ where the labels leave the answer open) and the batch is
  the unlabelled pairs whose P(a beats b) = sigmoid(r_a - r_b) varies most across the
  members (standard deviation), each response in at most one pair of a batch. A small
  gap can be a pair the model is sure is close; a disagreement is one it has not learned.
  Each point is measured on the first member, as every other strategy's single model,
  and the ensemble's mean reward is measured beside it (ensemble_accuracy).

Labels come from the simulated annotators' decision rule (rlhf_train/judgments/
simulated.py: Bradley-Terry noise around the task oracle); a pair the oracle scores
equal is a tie, a label spent that trains nothing, as in the loop's export.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.labels_pool import Part, Pool
from rlhf_train.config import RewardSettings
from rlhf_train.judgments.simulated import TASKS, decide

STRATEGIES = (
    "random", "uncertainty", "uncertainty-diverse", "uncertainty-distinct", "disagreement",
)  # fmt: skip
ENSEMBLE = 3  # members of the disagreement strategy's ensemble
NEAR_DUPLICATE = 0.8  # word-set Jaccard similarity from which two responses count as one
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Responses:
    """The responses of a pool part, flattened: response i answers prompt prompt_of[i]."""

    prompts: list[str]  # the prompt text of each response
    texts: list[str]
    prompt_of: np.ndarray


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs as indices into a Responses."""

    a: np.ndarray
    b: np.ndarray
    prompt: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def flatten(part: Part) -> Responses:
    prompts, texts, prompt_of = [], [], []
    for index, (prompt, responses) in enumerate(zip(part.prompts, part.responses, strict=True)):
        for text in responses:
            prompts.append(prompt)
            texts.append(text)
            prompt_of.append(index)
    return Responses(prompts, texts, np.array(prompt_of, dtype=np.int64))


def within_prompt_pairs(responses: Responses) -> Pairs:
    """Every pair of two different texts answering the same prompt."""
    a, b = [], []
    by_prompt: dict[int, list[int]] = {}
    for index, prompt in enumerate(responses.prompt_of.tolist()):
        by_prompt.setdefault(prompt, []).append(index)
    for members in by_prompt.values():
        for i, j in itertools.combinations(members, 2):
            if responses.texts[i] != responses.texts[j]:
                a.append(i)
                b.append(j)
    a_array, b_array = np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
    return Pairs(a_array, b_array, responses.prompt_of[a_array])


def _word_overlap(first: str, second: str) -> float:
    x, y = set(first.lower().split()), set(second.lower().split())
    return len(x & y) / len(x | y) if x | y else 1.0


def near_duplicates(responses: Responses, pairs: Pairs) -> np.ndarray:
    """Which pairs hold two responses sharing at least NEAR_DUPLICATE of their words."""
    return np.array(
        [
            _word_overlap(responses.texts[i], responses.texts[j]) >= NEAR_DUPLICATE
            for i, j in zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)
        ],
        dtype=bool,
    )


def simulated_labels(oracle: Sequence[float], pairs: Pairs, noise: float, seed: int) -> np.ndarray:
    """Each candidate's label as one simulated annotator would give it: +1 a preferred,
    -1 b preferred, 0 a tie (equal oracle scores). One draw per pair and seed, so every
    strategy of a seed sees the same judgment of the same pair."""
    rng = random.Random(seed * 1000 + 1)
    labels = np.zeros(len(pairs), dtype=np.int8)
    for k, (i, j) in enumerate(zip(pairs.a.tolist(), pairs.b.tolist(), strict=True)):
        choice = decide(oracle[i], oracle[j], rng, noise, position_bias=0.0).choice
        labels[k] = {"A": 1, "B": -1, "tie": 0}[choice]
    return labels


# --- training and scoring -------------------------------------------------------------


@dataclass
class Trained:
    score: Callable[[Responses], np.ndarray]
    steps: int
    seconds: float
    pairs: int


def train_reward_model(
    backbone: str,
    responses: Responses,
    pairs: Pairs,
    labels: np.ndarray,
    settings: RewardSettings,
    device: str = "cpu",
) -> Trained:
    """A reward model trained from `backbone` on the labelled pairs (ties left out), by
    the trainer `rlhf train reward` uses, with `settings` ([reward] of rlhf.toml)."""
    from datasets import Dataset
    from transformers.trainer_utils import SaveStrategy

    from rlhf_train.reward.backbone import load_sequence_classifier
    from rlhf_train.reward.format import RewardInputFormat, infer_style
    from rlhf_train.reward.scorer import RewardScorer
    from rlhf_train.reward.train import reward_trainer

    keep = labels != 0
    a, b = pairs.a[keep], pairs.b[keep]
    a_wins = labels[keep] > 0
    chosen = np.where(a_wins, a, b).tolist()
    rejected = np.where(a_wins, b, a).tolist()
    # The head is initialised from torch's generator: the seed decides it, not the clock.
    torch.manual_seed(settings.seed)
    model, tokenizer = load_sequence_classifier(backbone)
    input_format = RewardInputFormat(infer_style(tokenizer), settings.max_length)
    input_format.prepare(tokenizer)
    data = Dataset.from_dict(
        {
            "chosen_ids": input_format.encode(
                tokenizer,
                [responses.prompts[i] for i in chosen],
                [responses.texts[i] for i in chosen],
            ),
            "rejected_ids": input_format.encode(
                tokenizer,
                [responses.prompts[i] for i in rejected],
                [responses.texts[i] for i in rejected],
            ),
        }
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labels-rm-") as folder:
        trainer = reward_trainer(
            model, tokenizer, data, settings, output_dir=Path(folder), device=device
        )
        # The trainer saves a checkpoint when it stops; each model here lives for one
        # measurement, so that write (weights and optimizer state) would be time lost.
        trainer.args.save_strategy = SaveStrategy.NO
        outcome = trainer.train()
    seconds = time.perf_counter() - started
    scorer = RewardScorer(trainer.model.eval(), tokenizer, input_format, batch_size=64)

    def score(target: Responses) -> np.ndarray:
        return scorer.score(target.prompts, target.texts).astype(np.float64)

    return Trained(score, int(outcome.global_step), seconds, len(chosen))


# --- measuring ------------------------------------------------------------------------


def heldout_pairs(responses: Responses, oracle: Sequence[float], count: int) -> Pairs:
    """Up to `count` held-out pairs the noise-free oracle does not call a tie, chosen by a
    fixed shuffle so every run measures on the same pairs."""
    pairs = within_prompt_pairs(responses)
    scores = np.asarray(oracle, dtype=np.float64)
    decided = np.flatnonzero(scores[pairs.a] != scores[pairs.b])
    picked = np.sort(np.random.default_rng(0).permutation(decided)[:count])
    return Pairs(pairs.a[picked], pairs.b[picked], pairs.prompt[picked])


def measure(rewards: np.ndarray, oracle: Sequence[float], pairs: Pairs) -> dict[str, float]:
    """Pairwise accuracy against the oracle (equal rewards count half), and calibration of
    P(a beats b) = sigmoid(r_a - r_b) against the oracle's outcome: expected calibration
    error over CALIBRATION_BINS equal-width bins, and the Brier score."""
    scores = np.asarray(oracle, dtype=np.float64)
    a_better = (scores[pairs.a] > scores[pairs.b]).astype(np.float64)
    gap = rewards[pairs.a] - rewards[pairs.b]
    correct = np.where(gap == 0, 0.5, (gap > 0) == (a_better == 1))
    predicted = 1.0 / (1.0 + np.exp(-np.clip(gap, -50, 50)))
    bins = np.minimum((predicted * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    ece = sum(
        abs(predicted[bins == k].mean() - a_better[bins == k].mean()) * (bins == k).sum()
        for k in range(CALIBRATION_BINS)
        if (bins == k).any()
    ) / len(gap)
    return {
        "accuracy": float(np.mean(correct)),
        "ece": float(ece),
        "brier": float(np.mean((predicted - a_better) ** 2)),
    }


# --- choosing pairs -------------------------------------------------------------------


def most_uncertain(
    pairs: Pairs,
    rewards: np.ndarray,
    available: np.ndarray,
    count: int,
    rng: np.random.Generator,
    one_per_prompt: bool = False,
) -> list[int]:
    """The `count` available pairs with the smallest |r_a - r_b|, greedily, each response
    (and with `one_per_prompt`, each prompt) in at most one of them; equal gaps in a
    seeded order."""
    gaps = np.abs(rewards[pairs.a] - rewards[pairs.b])
    keys = np.where(np.isnan(gaps), np.inf, gaps)
    return _greedy(pairs, keys, available, count, rng, one_per_prompt)


def most_disputed(
    pairs: Pairs,
    members: Sequence[np.ndarray],
    available: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> list[int]:
    """The `count` available pairs whose sigmoid(r_a - r_b) has the largest standard
    deviation across the ensemble's `members` (rewards per response), greedily, each
    response in at most one of them; equal spreads in a seeded order."""
    spread = disagreement(pairs, members)
    return _greedy(pairs, np.where(np.isnan(spread), np.inf, -spread), available, count, rng)


def disagreement(pairs: Pairs, members: Sequence[np.ndarray]) -> np.ndarray:
    """Per pair, the standard deviation across members of P(a beats b)."""
    gaps = np.stack([rewards[pairs.a] - rewards[pairs.b] for rewards in members])
    return (1.0 / (1.0 + np.exp(-np.clip(gaps, -50, 50)))).std(axis=0)


def _greedy(
    pairs: Pairs,
    keys: np.ndarray,
    available: np.ndarray,
    count: int,
    rng: np.random.Generator,
    one_per_prompt: bool = False,
) -> list[int]:
    """Available pairs by ascending key, skipping any that shares a response (or, with
    `one_per_prompt`, a prompt) with one already taken, until `count` are taken."""
    candidates = np.flatnonzero(available)
    candidates = candidates[rng.permutation(len(candidates))]
    ordered = candidates[np.argsort(keys[candidates], kind="stable")]
    chosen: list[int] = []
    used_responses: set[int] = set()
    used_prompts: set[int] = set()
    for k in ordered.tolist():
        if len(chosen) == count:
            break
        i, j, prompt = int(pairs.a[k]), int(pairs.b[k]), int(pairs.prompt[k])
        if i in used_responses or j in used_responses:
            continue
        if one_per_prompt and prompt in used_prompts:
            continue
        used_responses.update((i, j))
        used_prompts.add(prompt)
        chosen.append(k)
    return chosen


@dataclass
class Point:
    """One reward model: its labels, training and held-out figures."""

    labels: int
    ties: int
    train_pairs: int
    steps: int
    train_seconds: float
    select_seconds: float
    figures: dict[str, float]
    chosen: list[int] = field(default_factory=list, repr=False)  # candidate indices, in order


@dataclass
class Setup:
    """What every strategy of a run shares."""

    pool: Pool
    task: str
    noise: float
    backbone: str
    settings: RewardSettings
    heldout_count: int = 1000
    device: str = "cpu"

    def __post_init__(self) -> None:
        oracle = TASKS[self.task]
        self.train = flatten(self.pool.train)
        self.heldout = flatten(self.pool.heldout)
        self.train_oracle = oracle(self.train.texts)
        self.heldout_oracle = oracle(self.heldout.texts)
        self.candidates = within_prompt_pairs(self.train)
        self.duplicates = near_duplicates(self.train, self.candidates)
        self.eval_pairs = heldout_pairs(self.heldout, self.heldout_oracle, self.heldout_count)


def run_strategy(
    setup: Setup,
    strategy: str,
    seed: int,
    sizes: Sequence[int],
    batch: int = 64,
    on_point: Callable[[Point], None] | None = None,
    trainer: Callable[..., Trained] = train_reward_model,
) -> list[Point]:
    """Reward models at each of `sizes` labels chosen by `strategy` with `seed`.

    Random trains one model per size. The uncertainty strategies train one after every
    batch up to the largest size (each is measured, sizes or not: the curve comes free).
    `trainer` is train_reward_model; a test wraps it to see each model trained.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(setup.candidates))
    labels = simulated_labels(setup.train_oracle, setup.candidates, setup.noise, seed)
    settings = _seeded(setup.settings, seed)
    points: list[Point] = []
    members = ENSEMBLE if strategy == "disagreement" else 1

    def point(chosen: Sequence[int], select_seconds: float) -> tuple[Point, list[Trained]]:
        index = np.asarray(chosen, dtype=np.int64)
        ensemble = []
        for member in range(members):
            # Member 0 is the strategy's single model; the others see a bootstrap resample.
            picked = index if member == 0 else rng.choice(index, size=len(index))
            subset = Pairs(
                setup.candidates.a[picked],
                setup.candidates.b[picked],
                setup.candidates.prompt[picked],
            )
            member_settings = settings if member == 0 else _seeded(settings, seed * 100 + member)
            ensemble.append(
                trainer(
                    setup.backbone,
                    setup.train,
                    subset,
                    labels[picked],
                    member_settings,
                    setup.device,
                )  # fmt: skip
            )
        trained = ensemble[0]
        rewards = trained.score(setup.heldout)
        figures = measure(rewards, setup.heldout_oracle, setup.eval_pairs)
        if members > 1:
            mean = np.mean([rewards] + [m.score(setup.heldout) for m in ensemble[1:]], axis=0)
            figures["ensemble_accuracy"] = measure(mean, setup.heldout_oracle, setup.eval_pairs)[
                "accuracy"
            ]
        result = Point(
            labels=len(chosen),
            ties=int((labels[index] == 0).sum()),
            train_pairs=trained.pairs,
            steps=trained.steps,
            train_seconds=round(sum(m.seconds for m in ensemble), 1),
            select_seconds=round(select_seconds, 1),
            figures=figures,
            chosen=list(chosen),
        )
        points.append(result)
        if on_point is not None:
            on_point(result)
        return result, ensemble

    if strategy == "random":
        for size in sorted(sizes):
            point(order[:size].tolist(), 0.0)
        return points
    chosen = order[:batch].tolist()
    select_seconds = 0.0
    while True:
        _, ensemble = point(chosen, select_seconds)
        if len(chosen) >= max(sizes):
            return points
        started = time.perf_counter()
        available = np.ones(len(setup.candidates), dtype=bool)
        available[chosen] = False
        if strategy == "uncertainty-distinct":
            available &= ~setup.duplicates
        count = min(batch, max(sizes) - len(chosen))
        before = len(chosen)
        if strategy == "disagreement":
            scores = [member.score(setup.train) for member in ensemble]
            chosen += most_disputed(setup.candidates, scores, available, count, rng)
        else:
            chosen += most_uncertain(
                setup.candidates,
                ensemble[0].score(setup.train),
                available,
                count,
                rng,
                one_per_prompt=strategy == "uncertainty-diverse",
            )
        select_seconds = time.perf_counter() - started
        if len(chosen) == before:
            return points  # every candidate is labelled: no larger size exists


def _seeded(settings: RewardSettings, seed: int) -> RewardSettings:
    from dataclasses import replace

    return replace(settings, seed=seed, checkpoint_every=10**9)
