"""Lead page: rounds with progress; open or close, settings, gold pairs.

The table lists every round, newest first; the controls are drawn for one round at a
time (the newest by default). Drawing a form, a slider and a gold-pair editor for every
round made the page slower with each round (1.35 s with twelve rounds, in the browser).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotate_app.conversation_view import show_prompt
from annotate_app.plain import literal
from annotate_app.rank_gold import gold_task_editor, task_for_gold
from annotate_app.run_view import workspace_root
from annotate_app.state import require_lead, sessions, write
from db.errors import UserError
from db.models import RENDER_MODES, Pair
from db.ranking import set_gold_ranking
from db.registry import list_models
from db.round_admin import GOLD_ANSWERS, gold_pairs, set_gold, set_status, update_settings
from db.rounds import get_round, round_summaries
from rlhf_train.rounds.arena_start import start_arena_round

RENDER_LABELS = {
    "text": "plain text",
    "markdown": "Markdown (rendered safely: images, links and HTML shown as text)",
}

require_lead()
st.title("Rounds")

with sessions()() as session:
    policy_names = [model.name for model in list_models(session, "policy")]
with st.expander("Start an arena round"), st.form("arena_round"):
    st.caption(
        "Each prompt is answered by two of the chosen policies, every pair of them equally "
        "often (adaptive: more prompts for the pairs whose ratings are least certain). "
        "Annotators are not told which policy wrote what."
    )
    chosen_policies = st.multiselect("Policies", policy_names, key="arena_policies")
    arena_prompts = st.number_input("Prompts", 1, 100_000, 60, key="arena_prompts")
    adaptive = st.checkbox("Adaptive", key="arena_adaptive")
    if st.form_submit_button("Start arena round"):
        try:
            started = start_arena_round(
                workspace_root(), chosen_policies, int(arena_prompts), adaptive
            )
        except UserError as error:
            st.error(literal(str(error)))
        else:
            st.success(
                literal(
                    f"Round {started.number} is being generated in the background; it fills "
                    f"in the table below as its prompts are done (output: {started.log})."
                )
            )

with sessions()() as session:
    summaries = sorted(round_summaries(session), key=lambda s: s.number, reverse=True)
if not summaries:
    st.info("No rounds yet. Generate one with `rlhf generate --round 1`.")
    st.stop()

st.dataframe(
    pd.DataFrame(
        [
            {
                "round": s.number,
                "status": s.status,
                "policy": s.policy,
                "previous policy": s.previous_policy or "",
                "pairs": s.pairs,
                "judgments": s.judgments,
                "needed": s.judgments_needed,
                "overlap": s.overlap,
                "gold rate": s.gold_rate,
                "shown as": s.render,
                "kind": f"ranking, K={s.rank_k}" if s.kind == "ranking" else "pairwise",
            }
            for s in summaries
        ]
    ),
    hide_index=True,
)


def _apply(action, *args, success: str, **kwargs) -> None:
    try:
        with write() as session:
            action(session, *args, **kwargs)
    except UserError as error:
        st.error(literal(str(error)))
    else:
        st.success(literal(success))


by_number = {s.number: s for s in summaries}
chosen = st.selectbox(
    "Round",
    list(by_number),
    format_func=lambda number: f"Round {number} ({by_number[number].status})",
    key="rounds_chosen",
)
for summary in [by_number[chosen]]:
    with st.container(border=True):
        st.progress(
            min(1.0, summary.judgments / summary.judgments_needed)
            if summary.judgments_needed
            else 0.0,
            text=f"{summary.judgments} of {summary.judgments_needed} judgments",
        )
        with sessions()() as session:
            round_ = get_round(session, summary.number)
            guidelines = round_.guidelines
        target = "closed" if summary.status == "open" else "open"
        if st.button(
            f"{'Close' if target == 'closed' else 'Reopen'} round {summary.number}",
            key=f"status_{summary.number}",
        ):
            _apply(
                set_status, summary.number, target, success=f"Round {summary.number} is {target}."
            )
            st.rerun()
        with st.form(f"settings_{summary.number}"):
            overlap = st.number_input("Judgments per pair (overlap)", 1, 50, summary.overlap)
            gold_rate = st.slider("Gold rate", 0.0, 1.0, float(summary.gold_rate), 0.01)
            render = st.radio(
                "Show responses as",
                RENDER_MODES,
                RENDER_MODES.index(summary.render),
                format_func=lambda mode: RENDER_LABELS[mode],
                horizontal=True,
            )
            text = st.text_area("Guidelines (Markdown)", guidelines, height=150)
            if st.form_submit_button("Save settings"):
                _apply(
                    update_settings,
                    summary.number,
                    overlap=int(overlap),
                    gold_rate=gold_rate,
                    guidelines=text,
                    render=render,
                    success="Saved.",
                )
        st.markdown("**Gold pairs**" if summary.kind == "pairwise" else "**Gold tasks**")
        pair_id = st.number_input("Pair #", min_value=1, step=1, key=f"gold_pair_{summary.number}")
        if summary.kind == "ranking":
            with sessions()() as session:
                shown_task = task_for_gold(session, int(pair_id), round_.id)
            if shown_task is None:
                st.caption(f"Task #{int(pair_id)} is not in round {summary.number}.")
            else:
                order = gold_task_editor(shown_task, summary.number)
                if order is not None:
                    _apply(
                        set_gold_ranking,
                        int(pair_id),
                        order.groups,
                        success=f"Task #{int(pair_id)} saved.",
                    )
        with sessions()() as session:
            pair = session.get(Pair, int(pair_id))
            shown = None
            if pair is not None and pair.round_id == round_.id:
                shown = (pair.prompt.text, pair.sample_a.text, pair.sample_b.text, pair.gold_choice)
                messages = pair.prompt.messages
        if summary.kind == "ranking":
            pass
        elif shown is None:
            st.caption(f"Pair #{int(pair_id)} is not in round {summary.number}.")
        else:
            prompt, text_a, text_b, current = shown
            if messages:  # a conversation: its turns as the annotators see them
                show_prompt(prompt, messages, "text")
            else:
                st.text(prompt)
            a, b = st.columns(2)
            with a.container(border=True):
                st.markdown("**A**")
                st.text(text_a)
            with b.container(border=True):
                st.markdown("**B**")
                st.text(text_b)
            answer = st.selectbox(
                "Known answer",
                ["not gold", *GOLD_ANSWERS],
                index=0 if current is None else 1 + GOLD_ANSWERS.index(current),
                key=f"gold_answer_{summary.number}",
            )
            if st.button("Save gold answer", key=f"gold_save_{summary.number}"):
                _apply(
                    set_gold,
                    int(pair_id),
                    None if answer == "not gold" else answer,
                    success=f"Pair #{int(pair_id)} saved.",
                )
        with sessions()() as session:
            golds = [(p.id, p.gold_choice) for p in gold_pairs(session, summary.number)]
        st.caption(
            "Gold pairs: " + (", ".join(f"#{i} ({answer})" for i, answer in golds) or "none")
        )
