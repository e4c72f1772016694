"""Property-based checks of the exporter's row building, without a database: whatever
the votes, counts add up, chosen differs from rejected, no prompt is in both splits, the
majority is right and ties are handled as documented."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_train.export.aggregate import aggregate
from rlhf_train.export.preferences import ExportOptions, build_splits, select_rows
from rlhf_train.export.query import PairTable
from rlhf_train.judgments.agreement import CATEGORIES, CODE, count_matrix

FILTER_KEYS = (
    "pairs_without_votes",
    "gold_pairs_excluded",
    "pairs_below_min_votes",
    "pairs_below_min_agreement",
    "pairs_both_bad",
    "pairs_tied_dropped",
)

pair_votes = st.lists(
    st.tuples(
        st.integers(0, 5),  # prompt
        st.lists(st.sampled_from(CATEGORIES), max_size=4),  # votes
        st.booleans(),  # gold
    ),
    min_size=1,
    max_size=25,
)


def _tables(generated):
    n = len(generated)
    pairs = PairTable(
        ids=np.arange(1, n + 1),
        round_numbers=np.ones(n, dtype=np.int64),
        prompt_ids=np.array([prompt for prompt, _, _ in generated]),
        sample_a=np.arange(n) * 2,
        sample_b=np.arange(n) * 2 + 1,
        gold=np.array([CODE["A"] if gold else -1 for _, _, gold in generated]),
    )
    items = np.array(
        [i for i, (_, votes, _) in enumerate(generated) for _ in votes], dtype=np.int64
    )
    values = np.array([CODE[v] for _, votes, _ in generated for v in votes], dtype=np.int64)
    strengths = np.ones(len(values), dtype=np.int64)
    outcomes = aggregate(count_matrix(items, values, n), items, values, strengths)
    prompts = {p: (f"prompt {p}", f"hash-{p}") for p in range(6)}
    samples = {i: (f"response {i}", "policy") for i in range(2 * n)}
    return pairs, outcomes, prompts, samples


@settings(max_examples=150, deadline=None)
@given(
    pair_votes,
    st.sampled_from(["drop", "half"]),
    st.integers(1, 3),
    st.sampled_from([0.0, 0.5, 0.9]),
    st.booleans(),
    st.floats(0, 0.9),
    st.integers(0, 3),
)
def test_rows_follow_the_rules(
    generated, ties, min_votes, min_agreement, exclude_gold, test_fraction, seed
):
    options = ExportOptions(
        out=Path("unused"),
        ties=ties,
        min_votes=min_votes,
        min_agreement=min_agreement,
        exclude_gold=exclude_gold,
        test_fraction=test_fraction,
        seed=seed,
    )
    pairs, outcomes, prompts, samples = _tables(generated)
    rows, counts = select_rows(pairs, outcomes, options)
    removed = sum(counts.get(key, 0) for key in FILTER_KEYS)
    assert removed + counts["pairs_exported"] == len(generated)
    per_pair = Counter(row.pair_index for row in rows)
    assert len(per_pair) == counts["pairs_exported"]
    for index, (_prompt, votes, _gold) in enumerate(generated):
        if index not in per_pair:
            continue
        tally = Counter(votes)
        top = max(tally.values())
        leaders = [c for c, n in tally.items() if n == top]
        assert len(votes) >= min_votes and top / len(votes) >= min_agreement
        assert leaders != ["both_bad"]
        mine = [row for row in rows if row.pair_index == index]
        if len(leaders) > 1 or leaders == ["tie"]:
            assert ties == "half" and sorted(r.chosen_side for r in mine) == ["A", "B"]
            assert {r.margin for r in mine} == {0.0}
        else:
            assert [r.chosen_side for r in mine] == leaders and mine[0].margin > 0
    splits = build_splits(rows, pairs, outcomes, prompts, samples, options)
    assert sum(len(columns["pair_id"]) for columns in splits.values()) == len(rows)
    assert not set(splits["train"]["prompt"]) & set(splits["test"]["prompt"])
    for columns in splits.values():
        assert all(c != r for c, r in zip(columns["chosen"], columns["rejected"], strict=True))
