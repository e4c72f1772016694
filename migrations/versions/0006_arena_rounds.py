"""arena rounds: pairs of strategy "arena", and a round's arena plan"""

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"

OLD_STRATEGIES = "strategy IN ('random', 'new_vs_previous', 'uncertainty', 'imported')"
NEW_STRATEGIES = "strategy IN ('random', 'new_vs_previous', 'uncertainty', 'imported', 'arena')"


def upgrade() -> None:
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pairs_strategy"), type_="check")
        batch_op.create_check_constraint(op.f("ck_pairs_strategy"), NEW_STRATEGIES)
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("arena_plan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_column("arena_plan")
    # An arena pair compares two policies, as a new-vs-previous pair does; relabelled so
    # the older schema keeps the judgments on it (and the ratings still see two policies).
    op.execute("UPDATE pairs SET strategy = 'new_vs_previous' WHERE strategy = 'arena'")
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pairs_strategy"), type_="check")
        batch_op.create_check_constraint(op.f("ck_pairs_strategy"), OLD_STRATEGIES)
