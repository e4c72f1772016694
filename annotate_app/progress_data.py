"""What the Progress page shows, shaped in plain Python: the leaderboard of policies from
the annotators' cross-policy votes, the policy evaluations as points across rounds, and
the side-by-side samples of one evaluation's report.

Evaluations are written by `rlhf evaluate policy` (and by every retraining). Their
metrics are read defensively: a key may be missing, None or nested, and the layout may
be flat ({"score_mean": ...}) or per policy ({"policy": {...}, "against": {...}}), so
the page plots whichever known figures are there. The report folder may be gone or
half-written; then there are simply no samples to show.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.evaluations import list_evaluations
from db.models import Judgment, Model, Round
from rlhf_train.errors import UserError
from rlhf_train.judgments.ratings import Leaderboard, fit_leaderboard
from rlhf_train.judgments.votes import cross_policy_votes

REPORT_FILE = "report.json"
# A report is written by our evaluator; anything much larger is not one, and reading it
# would stall the page.
MAX_REPORT_BYTES = 50 * 1024 * 1024
# The nested dict whose figures are the evaluated policy's own, plotted under the plain
# key names; other nested dicts get their name as a prefix ("against/score_mean").
OWN = "policy"
FIGURES = "figures"

# The charts of the page: title and the keys they plot, when present.
CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Reward score", ("score_mean", "against/score_mean")),
    ("KL to the reference (nats)", ("kl",)),
    ("Diversity", ("distinct_1", "distinct_2", "repetition_rate")),
    ("Response length (tokens)", ("response_length",)),
    ("Sentiment", ("sentiment_mean", "positive_share")),
    ("Win rates", ("reward_win_rate", "annotator_win_rate")),
    ("Reference perplexity", ("reference_perplexity",)),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def flatten_metrics(metrics: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics dict, nested dicts flattened with "/"; the
    evaluated policy's own dict (metrics["policy"]) under plain keys. A plain key at
    the top level wins over the same key inside metrics["policy"]."""
    if not isinstance(metrics, dict):
        return {}
    flat: dict[str, float] = {}
    nested: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        number = _number(value)
        if number is not None:
            flat[name] = number
        elif isinstance(value, dict):
            # `rlhf evaluate policy` keeps both policies' figures under "figures".
            unwrapped = not prefix and key in (OWN, FIGURES)
            nested |= flatten_metrics(value, "" if unwrapped else f"{name}/")
    return nested | flat


@dataclass(frozen=True)
class EvaluationPoint:
    """One evaluation, as the page plots and lists it."""

    id: int
    round_number: int | None
    policy: str
    against: str | None
    created_at: datetime
    report_path: str
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        where = f"round {self.round_number}" if self.round_number is not None else "no round"
        versus = f" vs {self.against}" if self.against else ""
        return f"#{self.id}: {self.policy}{versus} ({where})"


def evaluation_points(session: Session) -> list[EvaluationPoint]:
    """Every evaluation, oldest first, with its round number and the policies' names."""
    names: dict[int, str] = {}

    def name(model_id: int | None) -> str | None:
        if model_id is None:
            return None
        if model_id not in names:
            model = session.get(Model, model_id)
            names[model_id] = model.name if model is not None else f"model {model_id}"
        return names[model_id]

    points = []
    for evaluation in list_evaluations(session):
        round_ = session.get(Round, evaluation.round_id) if evaluation.round_id else None
        points.append(
            EvaluationPoint(
                id=evaluation.id,
                round_number=round_.number if round_ is not None else None,
                policy=name(evaluation.policy_id) or "",
                against=name(evaluation.against_id),
                created_at=evaluation.created_at,
                report_path=evaluation.report_path,
                figures=flatten_metrics(evaluation.metrics),
            )
        )
    return points


def progress_table(points: list[EvaluationPoint]) -> tuple[pd.DataFrame, str]:
    """The figures of `points`, one row each, and what the rows are indexed by: the
    round number when every evaluation has a distinct one, else the evaluation order
    (1, 2, ...), so that re-evaluating a round never folds two points into one."""
    rounds = [point.round_number for point in points]
    by_round = None not in rounds and len(set(rounds)) == len(rounds)
    index = rounds if by_round else list(range(1, len(points) + 1))
    frame = pd.DataFrame([point.figures for point in points], index=index)
    frame.index.name = "round" if by_round else "evaluation"
    return frame, frame.index.name


def charts(frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The charts that have something to plot: (title, columns of `frame` present)."""
    found = []
    for title, keys in CHARTS:
        columns = [key for key in keys if key in frame.columns and frame[key].notna().any()]
        if columns:
            found.append((title, columns))
    return found


def chart_data(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `frame` in long form (x, figure, value), the form a chart with one
    line per figure takes; evaluations without a figure leave no point."""
    axis = frame.index.name
    long = frame[columns].reset_index().melt(id_vars=axis, var_name="figure", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


@dataclass(frozen=True)
class SamplePair:
    """One prompt and the two policies' responses to it, as the report stored them."""

    prompt: str
    policy_response: str
    against_response: str | None
    policy_score: float | None
    against_score: float | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def read_report(report_path: str | Path | None) -> dict[str, Any]:
    """The report.json in an evaluation's report folder (or the file itself, if the
    path names it); {} when it is missing, too large or not a JSON object."""
    if not report_path:
        return {}
    path = Path(report_path)
    if path.is_dir():
        path = path / REPORT_FILE
    try:
        if not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
            return {}
        report = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def report_samples(report_path: str | Path | None) -> list[SamplePair]:
    """The report's `samples` rows that have a prompt and a policy response.

    Rows as `rlhf evaluate policy` writes them ({prompt, policy_response,
    against_response, policy_score, against_score}); a row of a lone policy's
    evaluation ({prompt, response, score}) is read as the policy's side.
    """
    samples = read_report(report_path).get("samples")
    if not isinstance(samples, list):
        return []
    pairs = []
    for row in samples:
        if not isinstance(row, dict):
            continue
        prompt = _text(row.get("prompt"))
        response = _text(row.get("policy_response", row.get("response")))
        if prompt is None or response is None:
            continue
        pairs.append(
            SamplePair(
                prompt=prompt,
                policy_response=response,
                against_response=_text(row.get("against_response")),
                policy_score=_number(row.get("policy_score", row.get("score"))),
                against_score=_number(row.get("against_score")),
            )
        )
    return pairs


# --- Leaderboard --------------------------------------------------------------------------

RESAMPLES = 1000


def leaderboard_stamp(session: Session) -> tuple[Any, ...]:
    """What the leaderboard depends on, cheaply: a new or changed judgment (a resubmit
    moves created_at), a new policy or a promotion (which may move the anchor) changes it."""
    return tuple(
        session.execute(
            select(
                select(func.count(Judgment.id)).scalar_subquery(),
                select(func.max(Judgment.created_at)).scalar_subquery(),
                select(func.count(Model.id)).scalar_subquery(),
                select(func.max(Model.promoted_at)).scalar_subquery(),
            )
        ).one()
    )


def compute_leaderboard(
    session: Session, style_control: bool, resamples: int = RESAMPLES
) -> Leaderboard | str:
    """The leaderboard of every round's cross-policy votes, or the sentence that says why
    there is none yet (no votes between two policies, nothing connected to the anchor)."""
    try:
        return fit_leaderboard(
            cross_policy_votes(session), style_control=style_control, resamples=resamples
        )
    except UserError as error:
        return str(error)


def rating_frame(board: Leaderboard) -> pd.DataFrame:
    """One row per rated policy, best first: rating, 95% interval, votes, P(beats next)."""
    return pd.DataFrame(
        [
            {
                "rank": rank,
                "policy": rating.name,
                "rating": round(rating.rating, 1),
                "low": round(rating.low, 1),
                "high": round(rating.high, 1),
                "votes": rating.votes,
                "beats next": None if rating.beats_next is None else round(rating.beats_next, 3),
            }
            for rank, rating in enumerate(board.ratings, start=1)
        ],
        columns=["rank", "policy", "rating", "low", "high", "votes", "beats next"],
    )


def never_compared_frame(board: Leaderboard) -> pd.DataFrame:
    return pd.DataFrame(board.never_compared, columns=["policy", "never compared with"])
