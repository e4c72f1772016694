"""bench/rank_labels.py's point on a handful of tasks: the annotations go through the
database and the exporter (a ranking of 4 gives 6 pairs), and the reward model it fits
learns the oracle's direction on clearly worded texts."""

from __future__ import annotations

import numpy as np

from bench.rank_labels import _features, _fit, _held_out, _point

GOOD = ["a wonderful, moving film, loved it", "great acting and a charming story"]
BAD = ["a terrible, boring waste of time", "awful script, dull and painful"]


def test_a_point_of_each_kind_exports_its_pairs(tmp_path) -> None:
    texts = [f"{GOOD[i % 2]} {i}" if i % 3 else f"{BAD[i % 2]} {i}" for i in range(60)]
    scores = np.array([1.0 if i % 3 else -1.0 for i in range(60)])
    held = _held_out(texts, scores + np.arange(60) * 1e-6)
    pairs = _point(tmp_path, texts, 2, 6, 0, 0.1, held)
    ranked = _point(tmp_path, texts, 4, 6, 0, 0.1, held)
    assert pairs["annotations"] == ranked["annotations"] == 6
    assert ranked["counts"] == {"rankings": 6, "ranking_pairs": 36}
    assert pairs["pairs"] <= 6 and ranked["pairs"] <= 36
    assert 0.0 <= pairs["accuracy"] <= 1.0


def test_the_fitted_model_ranks_by_the_labels() -> None:
    weights = _fit(_features(GOOD * 5), _features(BAD * 5))
    good, bad = _features(["loved this wonderful story"]), _features(["a boring, awful waste"])
    assert ((good - bad) @ weights)[0] > 0
