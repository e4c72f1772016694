"""lease sides and login failures: a lease keeps the side shown; names without an account
lock like real ones
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"


def upgrade() -> None:
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("left_sample", sa.String(length=1), nullable=True))
    # Which side the page drew for a lease made before this revision is not known; any
    # side is as good, and alternating by id keeps both sides in use.
    op.execute("UPDATE pair_leases SET left_sample = CASE WHEN id % 2 = 0 THEN 'A' ELSE 'B' END")
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.alter_column("left_sample", existing_type=sa.String(length=1), nullable=False)
        batch_op.create_check_constraint(
            op.f("ck_pair_leases_left_sample"), "left_sample IN ('A', 'B')"
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_login_at", sa.DateTime(), nullable=True))

    op.create_table(
        "login_failures",
        sa.Column("name_hash", sa.String(length=64), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("failed_login_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name_hash", name=op.f("pk_login_failures")),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_failed_login_at"), ["failed_login_at"])


def downgrade() -> None:
    op.drop_table("login_failures")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("failed_login_at")
    with op.batch_alter_table("pair_leases", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pair_leases_left_sample"), type_="check")
        batch_op.drop_column("left_sample")
