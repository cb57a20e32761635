"""sync points: N-of-M readiness and a deadline

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

WHERE = "status = 'pending' AND sync_deadline IS NOT NULL"


def upgrade() -> None:
    # plain ALTERs: SQLite's batch mode would rebuild tasks and lose its expression index
    op.add_column("tasks", sa.Column("sync_need", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("sync_deadline", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_tasks_sync_deadline",
        "tasks",
        ["sync_deadline"],
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_sync_deadline", table_name="tasks")
    op.execute("ALTER TABLE tasks DROP COLUMN sync_deadline")
    op.execute("ALTER TABLE tasks DROP COLUMN sync_need")
