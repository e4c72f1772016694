"""The lead's quality report: per annotator and per round figures on known votes."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from db.engine import transaction
from db.models import Judgment, Pair
from rlhf_train.judgments.quality import quality_report
from rlhf_train.rounds.generate import generate_round
from tests.helpers import record_votes, round_request, store_prompts


def test_quality_report(workspace, tiny_policy) -> None:
    store_prompts(workspace, [f"Prompt {i}" for i in range(4)])
    generate_round(workspace, round_request(tiny_policy, n_prompts=4), False)
    pair_ids = record_votes(
        workspace,
        {
            0: [("ann", "A", 1), ("bob", "A", 1), ("cat", "B", 1)],
            1: [("ann", "B", 1), ("bob", "B", 1), ("cat", "B", 1)],
            2: [("ann", "tie", None), ("bob", "skip", None)],
            3: [("ann", "A", 1)],
        },
    )
    with transaction(workspace.sessions) as session:
        session.get(Pair, pair_ids[1]).gold_choice = "A"
        # record_votes shows sample A on the left; make ann's seconds known.
        session.execute(update(Judgment).values(ms_spent=4000))
    with workspace.engine.connect() as connection:
        annotators, rounds = quality_report(connection)
    by_name = {a.name: a for a in annotators}
    ann, bob, cat = by_name["ann"], by_name["bob"], by_name["cat"]
    assert (ann.judgments, bob.judgments, cat.judgments) == (4, 3, 2)
    assert ann.median_seconds == pytest.approx(4.0)
    assert ann.tie_rate == pytest.approx(1 / 4) and bob.skip_rate == pytest.approx(1 / 3)
    # A shown left in every judgment: choosing A is choosing the left side.
    assert ann.left_rate == pytest.approx(2 / 3) and cat.left_rate == 0.0
    assert ann.gold_accuracy == 0.0 and cat.gold_accuracy == 0.0  # gold says A, all said B
    # cat is outvoted on pair 0 and agrees on pair 1; on pair 1 ann's others agree (B, B).
    assert cat.agreement_with_majority == pytest.approx(0.5)
    assert ann.agreement_with_majority == pytest.approx(1.0)
    (round_one,) = rounds
    assert (round_one.number, round_one.votes, round_one.pairs_with_votes) == (1, 8, 4)
    # Pairs of votes on the same pair: pair 0 has 3 (1 agrees), pair 1 has 3 (3 agree).
    assert round_one.pairwise_agreement == pytest.approx(4 / 6)
    assert round_one.krippendorff_alpha is not None


def test_quality_report_without_judgments(workspace) -> None:
    with workspace.engine.connect() as connection:
        assert quality_report(connection) == ([], [])
