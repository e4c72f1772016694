"""pair leases and judgment counts"""

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    op.create_table(
        "pair_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("annotator_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["annotator_id"], ["users.id"], name=op.f("fk_pair_leases_annotator_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["pair_id"], ["pairs.id"], name=op.f("fk_pair_leases_pair_id_pairs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pair_leases")),
        sa.UniqueConstraint("pair_id", "annotator_id", name="uq_pair_leases_pair_annotator"),
    )
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pair_leases_annotator_id"), ["annotator_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_pair_leases_pair_id"), ["pair_id"], unique=False)

    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_judgments_annotator_created", ["annotator_id", "created_at"], unique=False
        )

    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("judgment_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            "ix_pairs_round_judgment_count", ["round_id", "judgment_count", "id"], unique=False
        )
        batch_op.create_index(
            "ix_pairs_round_gold", ["round_id", "gold_choice", "judgment_count"], unique=False
        )

    # Judgments already in the database count from the start (skips never count).
    op.execute(
        "UPDATE pairs SET judgment_count = (SELECT count(*) FROM judgments "
        "WHERE judgments.pair_id = pairs.id AND judgments.choice <> 'skip')"
    )


def downgrade() -> None:
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_index("ix_pairs_round_gold")
        batch_op.drop_index("ix_pairs_round_judgment_count")
        batch_op.drop_column("judgment_count")

    with op.batch_alter_table("judgments", schema=None) as batch_op:
        batch_op.drop_index("ix_judgments_annotator_created")

    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pair_leases_pair_id"))
        batch_op.drop_index(batch_op.f("ix_pair_leases_annotator_id"))

    op.drop_table("pair_leases")
