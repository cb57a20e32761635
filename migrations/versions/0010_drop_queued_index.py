"""queued tasks have one index: the claim order

With two partial indexes over queued tasks the planner, holding statistics from a moment
when few tasks were queued, walked ``ix_tasks_queued`` and sorted every queued task on each
external claim. ``ix_tasks_claimable`` alone gives the claim its ordered scan whatever the
statistics say; the outbox and metrics reads of queued tasks use it too.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_tasks_queued", table_name="tasks")


def downgrade() -> None:
    op.create_index(
        "ix_tasks_queued",
        "tasks",
        ["queued_at"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
