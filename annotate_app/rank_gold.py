"""The Rounds page's gold editor for a ranking task: its K responses with their sample
ids, and the known order typed as "12 > 15 = 11 > 14" (or one id: only the best is
known; empty: not gold). db.ranking checks it against the task's responses."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotate_app.plain import literal
from db.errors import UserError
from db.models import Pair, Sample, TaskSample
from db.ranking import parse_order


@dataclass(frozen=True)
class GoldTask:
    pair_id: int
    prompt: str
    responses: list[tuple[int, str]]  # (sample id, text) by stored position
    gold: list[list[int]] | None


@dataclass(frozen=True)
class TypedOrder:
    groups: list[list[int]] | None  # None: not gold


def task_for_gold(session: Session, pair_id: int, round_id: int) -> GoldTask | None:
    pair = session.get(Pair, pair_id)
    if pair is None or pair.round_id != round_id:
        return None
    responses = session.execute(
        select(Sample.id, Sample.text)
        .join(TaskSample, TaskSample.sample_id == Sample.id)
        .where(TaskSample.pair_id == pair_id)
        .order_by(TaskSample.position)
    ).all()
    return GoldTask(pair_id, pair.prompt.text, [tuple(r) for r in responses], pair.gold_ranking)


def gold_task_editor(task: GoldTask, round_number: int) -> TypedOrder | None:
    """Draw the task and the order field; the order typed when Save is pressed."""
    st.text(task.prompt)
    for sample_id, text in task.responses:
        with st.container(border=True):
            st.markdown(f"**Sample {sample_id}**")
            st.text(text)
    current = " > ".join(" = ".join(map(str, group)) for group in task.gold or [])
    typed = st.text_input(
        "Known order: sample ids best first, = for ties (one id: only the best is known; "
        "empty: not gold)",
        value=current,
        key=f"gold_order_{round_number}_{task.pair_id}",
    )
    if not st.button("Save gold order", key=f"gold_order_save_{round_number}"):
        return None
    try:
        return TypedOrder(parse_order(typed))
    except UserError as error:
        st.error(literal(str(error)))
        return None
