"""Judge functions: a task's own measure of a response, independent of any reward model.

For the movie-review tasks the judge is the VADER sentiment lexicon (the
`vaderSentiment` package ships it): its compound score runs from -1 (very negative) to
+1 (very positive), and VADER's authors call a text positive at 0.05 or more and
negative at -0.05 or less. `words` counts whitespace-separated words, the measure of the
"shorter" task. Evaluation reports them next to the reward model's scores, and the
simulated annotators of `rlhf simulate` prefer by them, so a reward model that learns
something else than the task shows up as a gap between the two.

A judge takes prompts and responses and returns one float per response; only the
response is judged, since the prompt is not the policy's writing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

Judge = Callable[[Sequence[str], Sequence[str]], list[float]]

JUDGE_NAMES = ("sentiment", "words")
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


JUDGES: dict[str, Judge] = {"sentiment": sentiment, "words": words}


def parse_judges(setting: str) -> list[str]:
    """The names in a comma-separated setting such as evaluate.judges."""
    names = [name.strip() for name in setting.split(",") if name.strip()]
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise ValueError(f"unknown judges {unknown}; known: {', '.join(JUDGE_NAMES)}")
    return names


def judge_summary(name: str, scores: Sequence[float]) -> dict[str, float]:
    """The figures a report shows for one judge's scores."""
    if not scores:
        return {}
    mean = sum(scores) / len(scores)
    if name == "sentiment":
        return {
            "sentiment_mean": mean,
            "positive_share": sum(s >= POSITIVE_AT for s in scores) / len(scores),
            "negative_share": sum(s <= NEGATIVE_AT for s in scores) / len(scores),
        }
    return {f"{name}_mean": mean}
