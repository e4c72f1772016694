"""The Quality page's figures for rankings, on SQLite and PostgreSQL: the mean Kendall
tau-b per round, gold best agreement and gold tau per annotator; and a lead's typed
order parsed or refused in one sentence."""

from __future__ import annotations

import pytest

from db.engine import transaction
from db.errors import UserError
from db.judgments import record_judgment
from db.ranking import parse_order, set_gold_ranking, task_sample_ids
from rlhf_train.judgments.ranking_quality import ranking_quality
from tests.ranking_fixtures import ranking_round


def test_tau_per_round_and_gold_scores_per_annotator(workspace) -> None:
    (ann, bob), _ = ranking_round(workspace.sessions, k=3, tasks=2, overlap=2)
    with transaction(workspace.sessions) as session:
        first, second = (task_sample_ids(session, task) for task in (1, 2))
        set_gold_ranking(session, 1, [[first[0]]])  # only the best known
        set_gold_ranking(session, 2, [[s] for s in second])  # the full order known
        plans = {
            ann: {1: [[first[0]], [first[1]], [first[2]]], 2: [[s] for s in second]},
            bob: {1: [[first[1]], [first[0]], [first[2]]], 2: [[s] for s in reversed(second)]},
        }
        for user, tasks in plans.items():
            for task, ranking in tasks.items():
                record_judgment(
                    session, user, task, choice="ranking", left_sample="A", ranking=ranking
                )
    with workspace.engine.connect() as connection:
        rounds, annotators = ranking_quality(connection)
    [round_] = rounds
    assert (round_.number, round_.rank_k, round_.rankings, round_.tasks_ranked_twice) == (
        1,
        3,
        4,
        2,
    )
    # Task 1: one swapped pair of three, tau 1/3; task 2: reversed, tau -1.
    assert round_.mean_kendall_tau == pytest.approx((1 / 3 - 1) / 2)
    by_name = {a.name: a for a in annotators}
    assert by_name["u0"].gold_best_agreement == 1.0 and by_name["u0"].gold_kendall_tau == 1.0
    assert by_name["u1"].gold_best_agreement == 0.0 and by_name["u1"].gold_kendall_tau == -1.0


def test_a_typed_order_is_parsed_or_refused() -> None:
    assert parse_order("12 > 15 = 11 > 14") == [[12], [15, 11], [14]]
    assert parse_order(" 7 ") == [[7]]
    assert parse_order("  ") is None
    with pytest.raises(UserError, match="is not an order"):
        parse_order("12 > > 3")
