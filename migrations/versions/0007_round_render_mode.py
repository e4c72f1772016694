"""round render mode: how the annotate page shows a round's responses (text or markdown)"""

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"

RENDER_MODES = "render IN ('text', 'markdown')"


def upgrade() -> None:
    # The server default gives every existing round "text", as they were shown so far.
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("render", sa.String(length=20), server_default="text", nullable=False)
        )
        batch_op.create_check_constraint(op.f("ck_rounds_render"), RENDER_MODES)


def downgrade() -> None:
    with op.batch_alter_table("rounds", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rounds_render"), type_="check")
        batch_op.drop_column("render")
