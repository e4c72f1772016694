"""`rlhf leaderboard`: the table and --json from a real database, and one sentence with
exit code 2 for each kind of bad input."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.models import Pair
from rlhf_train.cli import main
from rlhf_train.rounds.generate import generate_round
from rlhf_train.workspace import Workspace
from tests.helpers import record_votes, round_request, store_prompts


@pytest.fixture
def run(tmp_path, db_url, monkeypatch, capsys):
    """Run `rlhf --workspace WS ARGS...` in-process on `db_url`; returns (code, out, err)."""
    monkeypatch.setenv("RLHF_DB_URL", db_url)
    workspace = tmp_path / "ws"

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what the setup printed (progress bars) is not this command's
        code = main(["--workspace", str(workspace), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    invoke.workspace = workspace
    return invoke


def _fails_with(result: tuple[int, str, str], expected: str) -> None:
    code, _out, err = result
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err


@pytest.fixture
def voted(run, tiny_policy, tiny_policy_v2):
    """Round 1: the v2 policy against the first on some prompts, each such pair judged by
    three annotators (v2 wins two of three); the pairs of one policy judged too."""
    assert run("init")[0] == 0
    workspace = Workspace.open(run.workspace)
    store_prompts(workspace, [f"The film number {i} was" for i in range(16)])
    request = round_request(
        tiny_policy_v2, previous_policy=str(tiny_policy), n_prompts=16, previous_fraction=0.5
    )
    generate_round(workspace, request, False)
    with workspace.sessions() as session:
        pairs = list(session.scalars(select(Pair).order_by(Pair.id)))
        new_id = pairs[0].round.policy_id
        votes = {}
        for position, pair in enumerate(pairs):
            new_side = "A" if pair.sample_a.policy_id == new_id else "B"
            old_side = "B" if new_side == "A" else "A"
            if pair.strategy == "new_vs_previous":
                votes[position] = [
                    ("ann", new_side, 2),
                    ("bob", new_side, 1),
                    ("cara", old_side, 1),
                ]
            else:
                votes[position] = [("ann", "tie", None)]
    record_votes(workspace, votes)
    workspace.engine.dispose()
    return run


def test_the_table_and_json(voted) -> None:
    code, out, err = voted("leaderboard", "--resamples", "200")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "rank",
        "policy",
        "rating",
        "95%",
        "interval",
        "votes",
        "P(beats",
        "next)",
    ]
    assert "anchored at 1000" in out and "200 bootstrap resamples" in out
    code, out, err = voted("leaderboard", "--json", "--resamples", "200", "--style-control")
    assert code == 0, err
    board = json.loads(out)
    ratings = board["ratings"]
    assert len(ratings) == 2 and board["unplaced"] == [] and board["never_compared"] == []
    assert board["style_control"] is True and board["length_coefficient"] is not None
    anchor = next(row for row in ratings if row["policy"] == board["anchor"])
    assert anchor["rating"] == 1000.0
    assert ratings[0]["rating"] >= ratings[1]["rating"]
    assert ratings[0]["beats_next"] >= 0.5 and ratings[1]["beats_next"] is None
    assert sum(row["votes"] for row in ratings) == 2 * board["n_votes"]


def test_the_same_seed_gives_the_same_intervals(voted) -> None:
    first = json.loads(voted("leaderboard", "--json", "--resamples", "100", "--seed", "3")[1])
    again = json.loads(voted("leaderboard", "--json", "--resamples", "100", "--seed", "3")[1])
    assert first == again


def test_bad_input_is_one_sentence(voted) -> None:
    _fails_with(voted("leaderboard", "--rounds", "one"), "is not a list of round numbers")
    _fails_with(voted("leaderboard", "--rounds", ","), "--rounds is empty")
    _fails_with(voted("leaderboard", "--rounds", "9"), "There is no round 9")
    _fails_with(voted("leaderboard", "--resamples", "5"), "use at least 100")
    _fails_with(voted("leaderboard", "--anchor", "nobody"), "'nobody' has no cross-policy votes")
    _fails_with(voted("leaderboard", "--weigh-by-gold"), "No annotator has judged a gold pair")


def test_no_votes_is_one_sentence(run) -> None:
    assert run("init")[0] == 0
    _fails_with(run("leaderboard"), "There are no cross-policy votes to rate policies from")
