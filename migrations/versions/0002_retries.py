"""retries: per-task backoff, indexes for the retry wake-up and deadline sweeps

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
    for name, column, status in (
        ("ix_tasks_retrying", "next_attempt_at", "retrying"),
        ("ix_tasks_running", "started_at", "running"),
    ):
        op.create_index(
            name,
            "tasks",
            [column],
            postgresql_where=sa.text(f"status = '{status}'"),
            sqlite_where=sa.text(f"status = '{status}'"),
        )


def downgrade() -> None:
    op.drop_index("ix_tasks_running", table_name="tasks")
    op.drop_index("ix_tasks_retrying", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("retry_backoff_max")
        batch.drop_column("retry_backoff")
