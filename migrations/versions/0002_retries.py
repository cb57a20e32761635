"""retries: per-task backoff, index for the retry wake-up sweep

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("retry_backoff", sa.Double(), nullable=True))
        batch.add_column(sa.Column("retry_backoff_max", sa.Double(), nullable=True))
    op.create_index(
        "ix_tasks_retrying",
        "tasks",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'retrying'"),
        sqlite_where=sa.text("status = 'retrying'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_retrying", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("retry_backoff_max")
        batch.drop_column("retry_backoff")
