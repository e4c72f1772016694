"""What a lead changes on a round: open or close it, its settings, its gold pairs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import RENDER_MODES, Pair, Round, utcnow
from db.rounds import get_round

GOLD_ANSWERS = ("A", "B", "tie", "both_bad")


def set_status(session: Session, number: int, status: str) -> Round:
    if status not in ("open", "closed"):
        raise UserError(f"Unknown round status {status!r}; use open or closed.")
    round_ = get_round(session, number)
    round_.status = status
    round_.closed_at = utcnow() if status == "closed" else None
    session.flush()
    return round_


def set_render(session: Session, number: int, render: str) -> Round:
    """Show round `number`'s responses as `render` ("text" or "markdown") from now on;
    what is stored is unchanged, only how the annotate page shows it."""
    if render not in RENDER_MODES:
        raise UserError(f"Unknown render mode {render!r}; use text or markdown.")
    round_ = get_round(session, number)
    round_.render = render
    session.flush()
    return round_


def update_settings(
    session: Session,
    number: int,
    *,
    overlap: int,
    gold_rate: float,
    guidelines: str,
    render: str | None = None,
) -> Round:
    """Set a round's overlap, gold rate, guidelines and (unless None) render mode."""
    if overlap < 1:
        raise UserError(f"Overlap {overlap} is below 1; each pair needs at least one judgment.")
    if not 0 <= gold_rate <= 1:
        raise UserError(f"Gold rate {gold_rate} is not between 0 and 1.")
    round_ = get_round(session, number) if render is None else set_render(session, number, render)
    round_.overlap = overlap
    round_.gold_rate = gold_rate
    round_.guidelines = guidelines
    session.flush()
    return round_


def set_gold(session: Session, pair_id: int, answer: str | None) -> Pair:
    """Make a pair gold with its known answer (A/B in stored order), or ordinary (None)."""
    if answer is not None and answer not in GOLD_ANSWERS:
        raise UserError(f"Gold answer {answer!r} is not one of {', '.join(GOLD_ANSWERS)}.")
    pair = session.get(Pair, pair_id)
    if pair is None:
        raise UserError(f"There is no pair #{pair_id}; check the number.")
    pair.gold_choice = answer
    session.flush()
    return pair


def gold_pairs(session: Session, number: int) -> list[Pair]:
    round_ = get_round(session, number)
    return list(
        session.scalars(
            select(Pair).where(Pair.round_id == round_.id, Pair.gold_choice.is_not(None))
        )
    )
