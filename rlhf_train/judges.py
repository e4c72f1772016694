"""Judge functions: a task's own measure of a response, independent of any reward model.

For the movie-review tasks the judge is the VADER sentiment lexicon (the
`vaderSentiment` package ships it): its compound score runs from -1 (very negative) to
+1 (very positive), and VADER's authors call a text positive at 0.05 or more and
negative at -0.05 or less. `words` counts whitespace-separated words, the measure of the
"shorter" task. `reviews` is a second sentiment judge that the simulated annotators never
use, a classifier fitted on rated reviews (review_judge.py): a policy that learned VADER's
tastes rather than sentiment shows a gap between the two. Evaluation reports them next
to the reward model's scores, and the simulated annotators of `rlhf simulate` prefer by
sentiment and words, so a reward model that learns something else than the task shows
up as a gap between the two.

A judge takes prompts and responses and returns one float per response; only the
response is judged, since the prompt is not the policy's writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache

Judge = Callable[[Sequence[str], Sequence[str]], list[float]]

JUDGE_NAMES = ("sentiment", "words", "reviews")
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05


@cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """VADER's compound score of each response, in [-1, 1]."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in responses]


def words(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [float(len(text.split())) for text in responses]


_SENTENCE_END = re.compile(r"[.!?…][\"')\]»”’]*$")


def closes_sentence(text: str) -> bool:
    """Whether the text's last words close a sentence (a closing quote or bracket may
    follow the full stop): what a reader sees of a response that ends rather than being
    cut off."""
    return bool(_SENTENCE_END.search(text.rstrip()))


def reviews(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The review classifier's probability that each response is positive, in [0, 1]."""
    from rlhf_train.review_judge import review_sentiment

    return review_sentiment(prompts, responses)


JUDGES: dict[str, Judge] = {"sentiment": sentiment, "words": words, "reviews": reviews}


def parse_judges(setting: str) -> list[str]:
    """The names in a comma-separated setting such as evaluate.judges."""
    names = [name.strip() for name in setting.split(",") if name.strip()]
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise ValueError(f"unknown judges {unknown}; known: {', '.join(JUDGE_NAMES)}")
    return names


# What a report shows of each judge: per figure, the value of one response; a figure is
# the mean of those over the responses (a share is the mean of 0s and 1s), so that its
# interval is the bootstrap of the same per-response values.
JUDGE_FIGURES: dict[str, dict[str, Callable[[float], float]]] = {
    "sentiment": {
        "sentiment_mean": float,
        "positive_share": lambda score: float(score >= POSITIVE_AT),
        "negative_share": lambda score: float(score <= NEGATIVE_AT),
    },
    "words": {"words_mean": float},
    "reviews": {
        "reviews_mean": float,
        "reviews_positive_share": lambda probability: float(probability > 0.5),
        "reviews_negative_share": lambda probability: float(probability < 0.5),
    },
}


def judge_values(name: str, scores: Sequence[float]) -> dict[str, list[float]]:
    """Per figure of the judge, each response's value (see JUDGE_FIGURES)."""
    return {
        figure: [value(score) for score in scores] for figure, value in JUDGE_FIGURES[name].items()
    }


def judge_summary(name: str, scores: Sequence[float]) -> dict[str, float]:
    """The figures a report shows for one judge's scores."""
    if not scores:
        return {}
    return {
        figure: sum(values) / len(values) for figure, values in judge_values(name, scores).items()
    }
