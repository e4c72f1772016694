"""ranking rounds: a round's kind and K, the K samples of a ranking task, rankings stored
on judgments and the order shown on leases"""

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"

OLD_CHOICES = "choice IN ('A', 'B', 'tie', 'both_bad', 'skip')"
NEW_CHOICES = "choice IN ('A', 'B', 'tie', 'both_bad', 'skip', 'ranking')"
OLD_GOLD = "gold_choice IS NULL OR gold_choice IN ('A', 'B', 'tie', 'both_bad')"
NEW_GOLD = "gold_choice IS NULL OR gold_choice IN ('A', 'B', 'tie', 'both_bad', 'ranking')"
KINDS = "kind IN ('pairwise', 'ranking')"
RANK_K = "(kind = 'pairwise' AND rank_k IS NULL) OR (kind = 'ranking' AND rank_k BETWEEN 3 AND 6)"


def upgrade() -> None:
    # Every existing round was pairwise; the server default says so for their rows.
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=20), server_default="pairwise", nullable=False)
        )
        batch_op.add_column(sa.Column("rank_k", sa.Integer(), nullable=True))
        batch_op.create_check_constraint(op.f("ck_rounds_kind"), KINDS)
        batch_op.create_check_constraint(op.f("ck_rounds_rank_k"), RANK_K)
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gold_ranking", sa.JSON(), nullable=True))
        batch_op.drop_constraint(op.f("ck_pairs_gold_choice"), type_="check")
        batch_op.create_check_constraint(op.f("ck_pairs_gold_choice"), NEW_GOLD)
    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ranking", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("display_order", sa.JSON(), nullable=True))
        batch_op.drop_constraint(op.f("ck_judgments_choice"), type_="check")
        batch_op.create_check_constraint(op.f("ck_judgments_choice"), NEW_CHOICES)
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_order", sa.JSON(), nullable=True))
    op.create_table(
        "task_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pair_id"], ["pairs.id"], name=op.f("fk_task_samples_pair_id_pairs")
        ),
        sa.ForeignKeyConstraint(
            ["sample_id"], ["samples.id"], name=op.f("fk_task_samples_sample_id_samples")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_samples")),
        sa.UniqueConstraint("pair_id", "position", name="uq_task_samples_pair_position"),
        sa.UniqueConstraint("pair_id", "sample_id", name="uq_task_samples_pair_sample"),
    )
    with op.batch_alter_table("task_samples", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_samples_pair_id"), ["pair_id"], unique=False)


def downgrade() -> None:
    # The older schema knows no rankings: their judgments, tasks and rounds go with the
    # columns that describe them (pairwise rounds keep every row).
    ranking_pairs = "SELECT pairs.id FROM pairs JOIN rounds ON rounds.id = pairs.round_id " + (
        "WHERE rounds.kind = 'ranking'"
    )
    op.execute(f"DELETE FROM judgments WHERE pair_id IN ({ranking_pairs})")
    op.execute(f"DELETE FROM pair_leases WHERE pair_id IN ({ranking_pairs})")
    op.execute("DELETE FROM judgments WHERE choice = 'ranking'")
    op.execute(f"UPDATE pairs SET judgment_count = 0 WHERE id IN ({ranking_pairs})")
    op.execute("UPDATE pairs SET gold_choice = NULL WHERE gold_choice = 'ranking'")
    with op.batch_alter_table("task_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_samples_pair_id"))
    op.drop_table("task_samples")
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.drop_column("display_order")
    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_judgments_choice"), type_="check")
        batch_op.create_check_constraint(op.f("ck_judgments_choice"), OLD_CHOICES)
        batch_op.drop_column("display_order")
        batch_op.drop_column("ranking")
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pairs_gold_choice"), type_="check")
        batch_op.create_check_constraint(op.f("ck_pairs_gold_choice"), OLD_GOLD)
        batch_op.drop_column("gold_ranking")
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rounds_rank_k"), type_="check")
        batch_op.drop_constraint(op.f("ck_rounds_kind"), type_="check")
        batch_op.drop_column("rank_k")
        batch_op.drop_column("kind")
