"""retraining jobs (round runs, worker fields) and policy evaluations"""

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"

OLD_KINDS = ("sft", "reward", "ppo", "dpo", "rloo", "grpo")
NEW_KINDS = (*OLD_KINDS, "round")


def _kinds(values: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_training_runs_kind"), type_="check")
        batch_op.create_check_constraint("kind", _kinds(NEW_KINDS))
        batch_op.add_column(sa.Column("round_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_training_runs_parent_id"), ["parent_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_training_runs_round_id_rounds"), "rounds", ["round_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_training_runs_parent_id_training_runs"),
            "training_runs",
            ["parent_id"],
            ["id"],
        )

    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("against_id", sa.Integer(), nullable=True),
        sa.Column("reward_model_id", sa.Integer(), nullable=True),
        sa.Column("round_id", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("report_path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["against_id"], ["models.id"], name=op.f("fk_evaluations_against_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["models.id"], name=op.f("fk_evaluations_policy_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["reward_model_id"],
            ["models.id"],
            name=op.f("fk_evaluations_reward_model_id_models"),
        ),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_evaluations_round_id_rounds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluations_policy_id"), ["policy_id"])
        batch_op.create_index(batch_op.f("ix_evaluations_round_id"), ["round_id"])


def downgrade() -> None:
    op.drop_table("evaluations")
    # Round jobs have no place in the old schema; their step runs stay, unlinked.
    op.execute("UPDATE training_runs SET parent_id = NULL")
    op.execute("DELETE FROM training_runs WHERE kind = 'round'")
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_training_runs_parent_id_training_runs"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_training_runs_round_id_rounds"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_training_runs_parent_id"))
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("worker")
        batch_op.drop_column("attempts")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("round_id")
        batch_op.drop_constraint(op.f("ck_training_runs_kind"), type_="check")
        batch_op.create_check_constraint("kind", _kinds(OLD_KINDS))
