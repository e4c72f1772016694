"""prompt conversations: a prompt may hold its messages (system/user/assistant turns)"""

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"


def upgrade() -> None:
    # Nullable: every existing prompt is a plain text prompt and keeps NULL here.
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A conversation keeps its readable rendering in `text` (and its hash), so the older
    # schema still shows and generates from it, as one text prompt.
    with op.batch_alter_table("prompts", schema=None) as batch_op:
        batch_op.drop_column("messages")
