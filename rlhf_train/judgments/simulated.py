"""Simulated annotators: they judge through the very functions the annotate page calls.

Each one asks `next_pair` for a pair (so overlap, gold pairs and leases apply as they do
to people), decides, and calls `record_judgment`. The decision comes from a task oracle
(a judge function of the response, see judges.py; `shorter` asks for a brief answer
that finishes, not for the fewest words) under the Bradley-Terry model:

    P(prefer A) = sigmoid((oracle(A) - oracle(B)) / noise)

so that `noise` 0 always follows the oracle and larger values blur close calls. Equal
oracle scores give a tie. With probability `position_bias` an annotator picks whatever
is shown on the left, without reading: the bias the Quality page's left-side rate shows.

A ranking task (K responses) is ranked under the Plackett-Luce model at the same
temperature: the best is drawn with P(i) proportional to exp(oracle(i) / noise), then the
best of the rest, and so on (any two of them compared alone follow the Bradley-Terry rule
above); neighbours with equal oracle scores are tied. Position bias ranks the responses
in the order shown.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from db.engine import transaction
from db.judgments import Assignment, PairUnavailable, next_pair, record_judgment
from rlhf_train.judges import closes_sentence, sentiment, words
from rlhf_train.workspace import Workspace

Oracle = Callable[[Sequence[str]], list[float]]


def _positive(texts: Sequence[str]) -> list[float]:
    return sentiment([], texts)


def _negative(texts: Sequence[str]) -> list[float]:
    return [-score for score in sentiment([], texts)]


# Asked for brevity, a reader still wants an answer: under this many words a response
# counts as long as the words it lacks would make it, so that saying nothing never beats
# a short sentence (a word count alone taught PPO to answer with one word or none).
SHORTEST_ANSWER = 5
# ...and wants it to finish: stopping mid-sentence costs as much as this many words.
UNFINISHED_COST = 10


def _shorter(texts: Sequence[str]) -> list[float]:
    scores = []
    for text, count in zip(texts, words([], texts), strict=True):
        weight = count if count >= SHORTEST_ANSWER else 2 * SHORTEST_ANSWER - count
        if not closes_sentence(text):
            weight += UNFINISHED_COST
        # Tens of words, so that a difference of one word weighs like a small sentiment shift.
        scores.append(-weight / 10)
    return scores


TASKS: dict[str, Oracle] = {"positive": _positive, "negative": _negative, "shorter": _shorter}


@dataclass(frozen=True)
class Decision:
    choice: str  # A, B or tie, in terms of the stored pair
    left_sample: str  # which stored sample was shown on the left


def decide(
    score_a: float, score_b: float, rng: random.Random, noise: float, position_bias: float
) -> Decision:
    left = rng.choice("AB")
    if rng.random() < position_bias:
        return Decision(left, left)
    if score_a == score_b:
        return Decision("tie", left)
    if noise == 0:
        return Decision("A" if score_a > score_b else "B", left)
    gap = (score_a - score_b) / noise
    prefer_a = 1 / (1 + math.exp(-gap)) if gap > -700 else 0.0
    return Decision("A" if rng.random() < prefer_a else "B", left)


def plackett_luce(scores: Sequence[float], rng: random.Random, noise: float) -> list[list[int]]:
    """Indices into `scores`, best first, as groups (see the module docstring)."""
    left = list(range(len(scores)))
    order: list[int] = []
    while left:
        if noise == 0:
            pick = max(left, key=lambda i: scores[i])
        else:
            top = max(scores[i] for i in left)
            weights = [math.exp((scores[i] - top) / noise) for i in left]
            pick = rng.choices(left, weights=weights)[0]
        order.append(pick)
        left.remove(pick)
    groups: list[list[int]] = []
    for index in order:
        if groups and scores[groups[-1][-1]] == scores[index]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


@dataclass(frozen=True)
class RankingDecision:
    ranking: list[list[int]]  # sample ids, best first
    display_order: list[int]


@dataclass
class SimulatedAnnotator:
    user_id: int
    name: str
    oracle: Oracle
    noise: float
    position_bias: float
    rng: random.Random

    def judge(self, assignment: Assignment) -> Decision:
        score_a, score_b = self.oracle([assignment.text_a, assignment.text_b])
        return decide(score_a, score_b, self.rng, self.noise, self.position_bias)

    def rank(self, assignment: Assignment) -> RankingDecision:
        shown = [sample for sample, _text in assignment.responses]
        if self.rng.random() < self.position_bias:
            return RankingDecision([[sample] for sample in shown], shown)
        scores = self.oracle([text for _sample, text in assignment.responses])
        groups = plackett_luce(scores, self.rng, self.noise)
        return RankingDecision([[shown[i] for i in group] for group in groups], shown)


def annotate(workspace: Workspace, annotators: list[SimulatedAnnotator], labels: int) -> int:
    """Annotators take turns until `labels` judgments are made or no pair is left for any
    of them; returns the number made."""
    made = 0
    active = list(annotators)
    while made < labels and active:
        for annotator in list(active):
            if made >= labels:
                break
            with transaction(workspace.sessions) as session:
                assignment = next_pair(session, annotator.user_id, rng=annotator.rng)
            if assignment is None:
                active.remove(annotator)
                continue
            if assignment.kind == "ranking":
                ranked = annotator.rank(assignment)
                judgment = dict(
                    choice="ranking",
                    left_sample="A",
                    ranking=ranked.ranking,
                    display_order=ranked.display_order,
                    # Reading K responses takes about K/2 times a pair's time.
                    ms_spent=sum(annotator.rng.randint(1500, 10000) for _ in assignment.responses),
                )
            else:
                decision = annotator.judge(assignment)
                judgment = dict(
                    choice=decision.choice,
                    left_sample=decision.left_sample,
                    ms_spent=annotator.rng.randint(3000, 20000),
                )
            try:
                with transaction(workspace.sessions) as session:
                    record_judgment(session, annotator.user_id, assignment.pair_id, **judgment)
                made += 1
            except PairUnavailable:
                continue  # as in the app: someone else completed it; take the next one
    return made
