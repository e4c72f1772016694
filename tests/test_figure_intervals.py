"""Intervals of a policy's figures, the second sentiment judge, and when a response ends."""

from __future__ import annotations

import random

import pytest

from rlhf_train.evaluation.intervals import (
    bootstrap_interval,
    mean_interval,
    policy_intervals,
    texts_interval,
)
from rlhf_train.evaluation.measures import distinct_n, ends
from rlhf_train.judges import judge_summary, judge_values
from rlhf_train.review_judge import fit, packaged_classifier, packaged_reviews


def test_a_share_of_128_prompts_has_the_interval_the_binomial_predicts() -> None:
    values = [1.0] * 64 + [0.0] * 64
    low, high = mean_interval(values)
    # The normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 128) = 0.5 +- 0.087.
    assert low == pytest.approx(0.413, abs=0.02) and high == pytest.approx(0.587, abs=0.02)
    assert mean_interval(values) == (low, high)  # seeded
    assert mean_interval(values, seed=1) != (low, high)
    assert mean_interval([1.0]) is None
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_a_wider_sample_gives_a_narrower_interval() -> None:
    rng = random.Random(0)
    small = [rng.gauss(0, 1) for _ in range(32)]
    large = [rng.gauss(0, 1) for _ in range(512)]
    small_low, small_high = mean_interval(small)
    large_low, large_high = mean_interval(large)
    assert (large_high - large_low) < (small_high - small_low) / 2


def test_a_corpus_figure_is_resampled_whole() -> None:
    rng = random.Random(1)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(128)]
    point = distinct_n(texts, 2)
    low, high = texts_interval(texts, lambda rows: distinct_n(rows, 2))
    # Centred on the figure (a bootstrap that repeats texts would sit below it), and as
    # wide as the spread of distinct-2 over independent corpora of the same size.
    assert low < point < high
    assert (high + low) / 2 == pytest.approx(point)
    others = [
        distinct_n([" ".join(rng.choice(words) for _ in range(12)) for _ in range(128)], 2)
        for _ in range(30)
    ]
    spread = (sum((x - point) ** 2 for x in others) / len(others)) ** 0.5
    assert 0.5 * spread < (high - low) / 3.92 < 2 * spread
    assert texts_interval(["one text"], lambda rows: 0.0) is None
    calls = []
    bootstrap_interval(10, lambda rows: calls.append(len(rows)) or 0.0, resamples=7)
    assert calls == [10] * 7


def test_every_figure_of_an_evaluation_gets_its_interval() -> None:
    sentiment = [0.6, -0.4, 0.0, 0.9, 0.3, -0.8, 0.05, 0.7]
    figures = {"scores": [0.1 * i for i in range(8)], "kl_terms": [1.0, 3.0] * 4}
    texts = [f"response number {i} is here" for i in range(8)]
    intervals = policy_intervals(figures, texts, {"sentiment": sentiment}, [True, False] * 4)
    assert set(intervals) == {
        "score_mean",
        "kl",
        "ended_share",
        "distinct_2",
        "sentiment_mean",
        "positive_share",
        "negative_share",
    }
    summary = judge_summary("sentiment", sentiment)
    for key, (low, high) in intervals.items():
        point = summary.get(key)
        if point is not None:
            assert low <= point <= high, key
    assert intervals["kl"][0] >= 1.0 and intervals["kl"][1] <= 3.0
    # Without a reward model or a reference those figures have no interval.
    bare = policy_intervals({"scores": None, "kl_terms": None}, texts, {}, [True] * 8)
    assert set(bare) == {"ended_share", "distinct_2"}


def test_judge_figures_are_means_of_per_response_values() -> None:
    scores = [0.2, 0.7, 0.5, 0.1]
    values = judge_values("reviews", scores)
    assert values["reviews_positive_share"] == [0.0, 1.0, 0.0, 0.0]
    assert values["reviews_negative_share"] == [1.0, 0.0, 0.0, 1.0]
    assert judge_summary("reviews", scores)["reviews_mean"] == pytest.approx(0.375)
    assert judge_summary("sentiment", [0.05, -0.05, 0.0]) == pytest.approx(
        {"sentiment_mean": 0.0, "positive_share": 1 / 3, "negative_share": 1 / 3}
    )


@pytest.mark.parametrize(
    ("text", "finished", "expected"),
    [
        ("He left the theatre.", False, True),
        ('She said "never again!"', False, True),
        ("It was (mostly) fine?)", False, True),
        ("It was the best film of the", False, False),
        ("It was the best film of the", True, True),
        ("Three dots...  ", False, True),
        ("", False, False),
    ],
)
def test_a_response_ends_with_an_end_token_or_a_closed_sentence(text, finished, expected) -> None:
    assert ends(text, finished) is expected


def test_the_review_classifier_learns_sentiment_from_labels() -> None:
    classifier = fit(
        [
            ("a wonderful film, great acting", 1),
            ("great fun and a wonderful cast", 1),
            ("boring plot and awful acting", 0),
            ("an awful, boring waste", 0),
        ]
        * 3
    )
    assert classifier.log_odds("wonderful and great") > 0 > classifier.log_odds("awful, boring")
    with pytest.raises(ValueError):
        fit([("only good ones", 1)])


def test_the_packaged_review_judge_agrees_with_reviewers_it_never_saw() -> None:
    classifier = packaged_classifier()
    held_out = packaged_reviews(held_out=True)
    assert 3000 < len(held_out) < 4000
    fitted_texts = {text for text, _ in packaged_reviews()}
    assert not fitted_texts & {text for text, _ in held_out}
    right = sum((classifier.log_odds(text) > 0) == bool(label) for text, label in held_out)
    assert right / len(held_out) > 0.8
    # Punctuation is not a feature: exclamation marks buy nothing.
    assert classifier.log_odds("a great film") == classifier.log_odds("a great film!!!")
