"""messaging: durable agent inboxes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("to_agent", sa.Uuid(), nullable=False),
        sa.Column("from_agent", sa.Uuid(), nullable=True),
        sa.Column("audience", sa.String(length=80), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "content",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "type IN ('info', 'question', 'warning', 'discovery', 'handoff_request', 'handoff_accepted', 'handoff_declined')",
            name="ck_agent_messages_type",
        ),
        sa.ForeignKeyConstraint(["to_agent"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_agent_messages_inbox", "agent_messages", ["to_agent", "read_at", "id"], unique=False
    )
    op.create_index("ix_agent_messages_thread", "agent_messages", ["thread_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_agent_messages_thread", table_name="agent_messages")
    op.drop_index("ix_agent_messages_inbox", table_name="agent_messages")
    op.drop_table("agent_messages")
