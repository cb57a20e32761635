"""task logs: every attempt's lines, in order

``task_logs`` holds one row per line of an attempt's log (a ``shell`` command's output, a
handler's ``ctx.log`` and ``logging`` lines, an external agent's posted lines), numbered from
1 per attempt. Deleted with its task; beat's retention sweep deletes lines older than
``OMOI_LOG_RETENTION``, found through a BRIN index on ``at`` (a plain index on SQLite).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_logs",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id", "attempt", "seq"),
    )
    op.create_index("ix_task_logs_at", "task_logs", ["at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_table("task_logs")
