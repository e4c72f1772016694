"""The schema comes from Alembic, agrees with the models, and migrates both ways with data."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from db.engine import make_engine, session_factory, transaction
from db.models import (
    Base,
    Export,
    Judgment,
    LoginFailure,
    Model,
    Pair,
    PairLease,
    Prompt,
    Round,
    TrainingRun,
    User,
    utcnow,
)
from migrations.runner import current_revision, downgrade, head_revision, upgrade
from tests.helpers import two_samples


def _differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def _fill_every_table(engine) -> None:
    with transaction(session_factory(engine)) as session:
        user = User(name="ann", role="annotator", password_hash="x")
        policy = Model(kind="policy", name="p0", path="/models/p0")
        session.add_all([user, policy])
        session.flush()
        round_ = Round(number=1, policy_id=policy.id)
        prompt = Prompt(text="Hello", source="test", content_hash="h" * 64)
        session.add_all([round_, prompt])
        session.flush()
        samples = two_samples(prompt.id, policy.id, round_.id)
        session.add_all(samples)
        session.flush()
        pair = Pair(
            round_id=round_.id,
            prompt_id=prompt.id,
            sample_a_id=samples[0].id,
            sample_b_id=samples[1].id,
        )
        session.add(pair)
        session.flush()
        export = Export(output_path="/exports/1", content_hash="e" * 64)
        session.add_all(
            [
                Judgment(pair_id=pair.id, annotator_id=user.id, choice="A", left_sample="B"),
                PairLease(
                    pair_id=pair.id, annotator_id=user.id, expires_at=utcnow(), left_sample="A"
                ),
                LoginFailure(name_hash="n" * 64, failed_logins=1, failed_login_at=utcnow()),
                export,
            ]
        )
        session.flush()
        run = TrainingRun(kind="ppo", export_id=export.id, output_model_id=policy.id)
        session.add(run)
        session.flush()
        policy.round_id = round_.id
        policy.training_run_id = run.id
        policy.promoted_at = utcnow()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert _differences(engine) == []
    engine.dispose()


def test_upgrade_downgrade_upgrade_with_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    _fill_every_table(engine)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Judgment)).scalar() == 1

    downgrade(engine, "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert _differences(engine) == []
    _fill_every_table(engine)  # the recreated schema takes the same rows again
    engine.dispose()


def test_init_is_idempotent(workspace) -> None:
    from rlhf_train.workspace_setup import init_workspace

    report = init_workspace(workspace)
    assert report.revision_before == report.revision_after == head_revision()


# Two annotators and one pair of two samples, in the columns revision 0001 made (raw SQL:
# the models in db/models.py describe the newest schema, not the one being upgraded).
_ONE_PAIR_OF_REVISION_0001 = (
    "INSERT INTO users (id, name, role, password_hash, active, failed_logins, created_at) "
    "VALUES (1, 'a', 'annotator', 'x', true, 0, '2026-01-01'), "
    "(2, 'b', 'annotator', 'x', true, 0, '2026-01-01')",
    "INSERT INTO models (id, kind, name, path, config, metrics, created_at) "
    "VALUES (1, 'policy', 'p', '/p', '{}', '{}', '2026-01-01')",
    "INSERT INTO rounds (id, number, status, overlap, gold_rate, guidelines, created_at) "
    "VALUES (1, 1, 'open', 3, 0, '', '2026-01-01')",
    "INSERT INTO prompts (id, text, source, content_hash, split, chat, created_at) "
    "VALUES (1, 'q', 't', 'h', 'train', false, '2026-01-01')",
    "INSERT INTO samples (id, prompt_id, policy_id, round_id, text, decoding, seed, "
    "token_count, finished, created_at) VALUES "
    "(1, 1, 1, 1, 'x', '{}', 0, 1, true, '2026-01-01'), "
    "(2, 1, 1, 1, 'y', '{}', 0, 1, true, '2026-01-01')",
    "INSERT INTO pairs (id, round_id, prompt_id, sample_a_id, sample_b_id, strategy, "
    "created_at) VALUES (1, 1, 1, 1, 2, 'random', '2026-01-01')",
)


def _upgrade_from(engine, revision: str, *rows: str) -> None:
    """Migrate to `revision`, store one pair's rows and then `rows`, migrate to head."""
    upgrade(engine, revision)
    with engine.begin() as connection:
        for statement in (*_ONE_PAIR_OF_REVISION_0001, *rows):
            connection.exec_driver_sql(statement)
    upgrade(engine)


def test_judgment_counts_are_backfilled(db_url: str) -> None:
    """Judgments stored before revision 0002 count toward their pairs once it runs."""
    engine = make_engine(db_url)
    _upgrade_from(
        engine,
        "0001",
        "INSERT INTO judgments (pair_id, annotator_id, choice, rationale, flags, left_sample, "
        "ms_spent, created_at) VALUES (1, 1, 'A', '', '{}', 'A', 0, '2026-01-01'), "
        "(1, 2, 'skip', '', '{}', 'A', 0, '2026-01-01')",
    )
    with engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT judgment_count FROM pairs").scalar()
    assert count == 1  # the skip does not count
    engine.dispose()


def test_existing_leases_get_a_side(db_url: str) -> None:
    """Leases made before revision 0005 keep working: each gets a side (A or B), both sides
    are used, and the new login_failures table starts empty."""
    engine = make_engine(db_url)
    _upgrade_from(
        engine,
        "0004",
        "INSERT INTO pair_leases (id, pair_id, annotator_id, expires_at) VALUES "
        "(1, 1, 1, '2026-01-01'), (2, 1, 2, '2026-01-01')",
    )
    with engine.connect() as connection:
        sides = connection.exec_driver_sql("SELECT left_sample FROM pair_leases ORDER BY id")
        assert sorted(side for (side,) in sides) == ["A", "B"]
        failures = connection.exec_driver_sql("SELECT count(*) FROM login_failures").scalar()
        assert failures == 0
    assert _differences(engine) == []
    engine.dispose()


def test_existing_rounds_render_as_text(db_url: str) -> None:
    """Rounds made before revision 0007 keep their rows and show plain text; the new
    column takes only the modes the app knows."""
    engine = make_engine(db_url)
    _upgrade_from(engine, "0006")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT render FROM rounds").scalar() == "text"
        assert connection.exec_driver_sql("SELECT count(*) FROM pairs").scalar() == 1
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.exec_driver_sql("UPDATE rounds SET render = 'html'")
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE rounds SET render = 'markdown'")
    downgrade(engine, "0006")
    upgrade(engine)
    with engine.connect() as connection:
        # Down and up again: the mode is dropped with its column, and comes back as text.
        assert connection.exec_driver_sql("SELECT render FROM rounds").scalar() == "text"
    assert _differences(engine) == []
    engine.dispose()
