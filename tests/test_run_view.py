"""The data shaping behind the Training runs and Progress pages, without a browser."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from annotate_app.progress_data import (
    EvaluationPoint,
    chart_data,
    charts,
    evaluation_points,
    flatten_metrics,
    progress_table,
    report_samples,
)
from annotate_app.run_view import (
    age,
    curve_groups,
    loop_settings,
    numeric_curves,
    read_log_records,
    run_files,
    run_label,
    step_rows,
    table_order,
    tail_lines,
)
from db.engine import transaction
from db.evaluations import add_evaluation
from db.models import Model, Round, TrainingRun

# --- runs -------------------------------------------------------------------------------


def _run(run_id: int, kind: str = "ppo", parent_id: int | None = None) -> TrainingRun:
    return TrainingRun(id=run_id, kind=kind, parent_id=parent_id, status="running")


def test_table_order_puts_each_jobs_steps_right_after_it() -> None:
    # Newest first, as list_runs returns them; run 2 is a step of a job not listed.
    runs = [
        _run(9),
        _run(8, "ppo", 6),
        _run(7, "reward", 6),
        _run(6, "round"),
        _run(5),
        _run(2, "reward", 1),
    ]
    rows = table_order(runs)
    assert [(row.run.id, row.part_of) for row in rows] == [
        (9, None),
        (6, None),
        (7, 6),
        (8, 6),
        (5, None),
        (2, 1),
    ]
    assert run_label(runs[1]) == "#8 ppo (step of #6)"
    assert run_label(runs[3]) == "#6 round"


def test_read_log_records_skips_what_is_not_a_json_object(tmp_path: Path) -> None:
    log = tmp_path / "run-1.jsonl"
    log.write_text('{"step": 1, "kl": 0.1}\n[1, 2]\nnot json\n\n{"step": 2, "kl": 0.2}\n{"st')
    assert read_log_records(log) == [{"step": 1, "kl": 0.1}, {"step": 2, "kl": 0.2}]
    assert read_log_records(tmp_path / "missing.jsonl") == []
    assert read_log_records(None) == []


def test_numeric_curves_keep_numbers_per_step() -> None:
    records = [
        {"step": 1, "score_mean": 0.5, "kl": 0.01, "loss/policy": 0.3, "note": "text"},
        {"step": 1, "samples": [{"prompt": "p", "response": "r"}]},
        {"step": 2, "score_mean": 0.7, "kl": float("nan"), "stopped": True, "scores": [1, 2]},
        {"step": 2, "eval_loss": 0.9},
        {"epoch": 0.5, "loss": 1.5},  # no step: numbered by position
        {"step": "x"},
        # A retraining job's step event is not a point, whatever numbers it has.
        {"event": "step", "step": "reward", "status": "done", "seconds": 12.5},
    ]
    frame = numeric_curves(records)
    assert list(frame.index) == [1, 2, 4]
    assert set(frame.columns) == {"score_mean", "kl", "loss/policy", "eval_loss", "loss"}
    assert frame.loc[2, "score_mean"] == 0.7
    assert frame.loc[2, "eval_loss"] == 0.9
    assert frame.loc[1, "kl"] == 0.01
    assert frame.loc[2, "kl"] != frame.loc[2, "kl"]  # NaN left out, so missing
    assert numeric_curves([{"step": 1, "samples": []}]).empty


def test_curve_groups_by_what_the_key_measures() -> None:
    columns = ["loss/value", "kl", "objective/kl", "score_mean", "rewards/chosen", "lr", "loss"]
    assert curve_groups(columns) == {
        "Loss": ["loss/value", "loss"],
        "KL": ["kl", "objective/kl"],
        "Reward": ["score_mean", "rewards/chosen"],
        "Other": ["lr"],
    }


def test_tail_lines_reads_the_end_of_a_large_file(tmp_path: Path) -> None:
    log = tmp_path / "run-1.log"
    log.write_bytes(
        "".join(f"line {i}\n" for i in range(100_000)).encode() + b"bad \xff byte\nlast"
    )
    tail = tail_lines(log, count=3, max_bytes=4096)
    assert tail.splitlines() == ["line 99999", "bad \ufffd byte", "last"]
    assert len(tail_lines(log, count=40, max_bytes=4096).splitlines()) == 40
    # A short file: every line, the first one included.
    short = tmp_path / "short.log"
    short.write_text("a\nb\n")
    assert tail_lines(short) == "a\nb"
    assert tail_lines(tmp_path / "missing.log") == ""
    assert tail_lines(None) == ""


def test_run_files_with_and_without_a_log_path(tmp_path: Path) -> None:
    run = _run(3)
    run.log_path = str(tmp_path / "logs" / "run-3.jsonl")
    assert run_files(run, None) == (tmp_path / "logs/run-3.jsonl", tmp_path / "logs/run-3.log")
    queued = _run(4)
    assert run_files(queued, tmp_path) == (
        tmp_path / "logs/run-4.jsonl",
        tmp_path / "logs/run-4.log",
    )
    assert run_files(queued, None) == (None, None)


def test_age_in_readable_units() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert age(None, now) == "never"
    assert age(now - timedelta(seconds=7), now) == "7 s ago"
    assert age(now - timedelta(minutes=5), now) == "5 min ago"
    assert age(now - timedelta(hours=3), now) == "3 h ago"
    assert age(now - timedelta(days=4), now) == "4 days ago"
    assert age(now + timedelta(seconds=3), now) == "0 s ago"  # clocks a little apart


def test_step_rows_of_a_retraining_job() -> None:
    metrics = {
        "current_step": "ppo",
        "steps": {
            "export": {"status": "succeeded", "pairs": 120, "path": "exports/e1"},
            "reward": {"status": "succeeded", "accuracy": 0.71234, "run": 5},
            "ppo": {"status": "running", "extra": {"a": 1}},
            "evaluate": "pending",
        },
    }
    rows = step_rows(metrics)
    assert [row["step"] for row in rows] == ["export", "reward", "ppo", "evaluate"]
    assert [row["current"] for row in rows] == ["", "", "◀", ""]
    assert rows[0]["pairs"] == "120"
    assert rows[1]["accuracy"] == "0.7123"
    assert rows[2]["extra"] == '{"a": 1}'
    assert rows[3]["value"] == "pending"
    assert all(isinstance(value, str) for row in rows for value in row.values())
    # The worker's layout: the step under way is not in "steps" until it ends.
    running = {
        "current_step": "reward",
        "steps": {"close": {"done": True, "outputs": {"pairs": 3}, "seconds": 0.4}},
    }
    assert step_rows(running) == [
        {
            "step": "close",
            "current": "",
            "done": "True",
            "outputs": '{"pairs": 3}',
            "seconds": "0.4",
        },
        {"step": "reward", "current": "◀"},
    ]
    assert step_rows({}) == []
    assert step_rows(None) == []
    assert step_rows({"steps": "garbage"}) == []


def test_loop_settings_come_from_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert loop_settings().optimizer == "ppo"  # no workspace: the defaults
    (tmp_path / "rlhf.toml").write_text('[loop]\noptimizer = "dpo"\nmin_judgments = 7\n')
    monkeypatch.setenv("RLHF_WORKSPACE", str(tmp_path))
    settings = loop_settings()
    assert (settings.optimizer, settings.min_judgments) == ("dpo", 7)


# --- progress ---------------------------------------------------------------------------


def test_flatten_metrics_flat_and_per_policy_layouts() -> None:
    assert flatten_metrics({"score_mean": 1, "kl": None, "name": "x", "ok": True}) == {
        "score_mean": 1.0
    }
    nested = {
        "policy": {"score_mean": 0.8, "distinct_2": 0.5, "samples": [1], "kl": float("inf")},
        "against": {"score_mean": 0.2, "judges": {"sentiment": {"mean": 0.1}}},
        "reward_win_rate": 0.75,
        "distinct_2": 0.6,  # a top-level key wins over the policy's
    }
    assert flatten_metrics(nested) == {
        "score_mean": 0.8,
        "distinct_2": 0.6,
        "against/score_mean": 0.2,
        "against/judges/sentiment/mean": 0.1,
        "reward_win_rate": 0.75,
    }
    assert flatten_metrics(None) == {}
    assert flatten_metrics([1, 2]) == {}


def _point(number: int, round_number: int | None, **figures: float) -> EvaluationPoint:
    return EvaluationPoint(
        id=number,
        round_number=round_number,
        policy=f"policy-{number}",
        against=None,
        created_at=datetime(2025, 1, number, tzinfo=UTC),
        report_path="",
        figures=figures,
    )


def test_progress_table_by_round_or_by_order() -> None:
    frame, axis = progress_table([_point(1, 1, score_mean=0.1), _point(2, 3, kl=0.5)])
    assert axis == "round"
    assert list(frame.index) == [1, 3]
    assert [title for title, _ in charts(frame)] == ["Reward score", "KL to the reference (nats)"]
    # A round evaluated twice, or an evaluation without a round: evaluation order.
    frame, axis = progress_table([_point(1, 1), _point(2, 1), _point(3, None)])
    assert (axis, list(frame.index)) == ("evaluation", [1, 2, 3])
    assert charts(frame) == []


def test_charts_plot_only_known_keys_that_have_values() -> None:
    frame, _ = progress_table(
        [
            _point(1, 1, distinct_2=0.4, positive_share=0.5, unknown=3.0),
            _point(2, 2, distinct_2=0.5, annotator_win_rate=0.6, reward_win_rate=0.7),
        ]
    )
    assert charts(frame) == [
        ("Diversity", ["distinct_2"]),
        ("Sentiment", ["positive_share"]),
        ("Win rates", ["reward_win_rate", "annotator_win_rate"]),
    ]
    long = chart_data(frame, ["distinct_2", "reward_win_rate"])
    assert long.to_dict("records") == [
        {"round": 1, "figure": "distinct_2", "value": 0.4},
        {"round": 2, "figure": "distinct_2", "value": 0.5},
        {"round": 2, "figure": "reward_win_rate", "value": 0.7},
    ]


def test_report_samples_are_read_defensively(tmp_path: Path) -> None:
    folder = tmp_path / "report"
    assert report_samples(folder) == []  # no folder
    folder.mkdir()
    assert report_samples(folder) == []  # no report.json
    (folder / "report.json").write_text("{not json")
    assert report_samples(folder) == []
    (folder / "report.json").write_text("[1, 2]")
    assert report_samples(folder) == []
    (folder / "report.json").write_text(json.dumps({"samples": "nope"}))
    assert report_samples(folder) == []
    rows = [
        {
            "prompt": "The film",
            "policy_response": "was <b>great</b>",
            "against_response": "was dull",
            "policy_score": 0.9,
            "against_score": -0.2,
        },
        {"prompt": "Solo", "response": "a lone policy's row", "score": 0.5},
        {"prompt": "No response"},
        "not a row",
        {"prompt": "Odd", "policy_response": ["a", 1], "policy_score": "high"},
    ]
    (folder / "report.json").write_text(json.dumps({"metrics": {}, "samples": rows}))
    samples = report_samples(folder)
    assert [(s.prompt, s.policy_response, s.against_response) for s in samples] == [
        ("The film", "was <b>great</b>", "was dull"),
        ("Solo", "a lone policy's row", None),
        ("Odd", '["a", 1]', None),
    ]
    assert [(s.policy_score, s.against_score) for s in samples] == [
        (0.9, -0.2),
        (0.5, None),
        (None, None),
    ]
    # The path may name the file itself.
    assert len(report_samples(folder / "report.json")) == 3
    assert report_samples("") == []


def test_evaluation_points_name_rounds_and_policies(sqlite_workspace) -> None:
    with transaction(sqlite_workspace.sessions) as session:
        old = Model(kind="policy", name="policy-v1", path="/m/1")
        new = Model(kind="policy", name="policy-v2", path="/m/2")
        round_ = Round(number=4)
        session.add_all([old, new, round_])
        session.flush()
        add_evaluation(session, policy_id=old.id, metrics={"score_mean": 0.1}, report_path="r1")
        add_evaluation(
            session,
            policy_id=new.id,
            against_id=old.id,
            round_id=round_.id,
            metrics={"policy": {"score_mean": 0.4}, "against": {"score_mean": 0.1}},
            report_path="r2",
        )
    with sqlite_workspace.sessions() as session:
        points = evaluation_points(session)
    assert [(p.policy, p.against, p.round_number) for p in points] == [
        ("policy-v1", None, None),
        ("policy-v2", "policy-v1", 4),
    ]
    assert points[1].figures == {"score_mean": 0.4, "against/score_mean": 0.1}
    assert points[1].label == "#2: policy-v2 vs policy-v1 (round 4)"
