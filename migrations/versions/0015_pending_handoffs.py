"""pending handoff requests

A ``handoff_request`` row records the ``attempt`` its sender held the task in, and
``answered_at`` once it is answered (accepted or declined by its recipient) or the task moved
to another holder. A ``handoff_accepted`` is taken only in reply to a pending one; requests sent before this
revision have no attempt, so none of them is pending.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_messages", sa.Column("attempt", sa.Integer(), nullable=True))
    op.add_column(
        "agent_messages", sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_agent_messages_task", "agent_messages", ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_agent_messages_task", table_name="agent_messages")
    # plain ALTERs, as in 0014: SQLite (3.35+) drops columns without a table rebuild
    op.execute("ALTER TABLE agent_messages DROP COLUMN answered_at")
    op.execute("ALTER TABLE agent_messages DROP COLUMN attempt")
