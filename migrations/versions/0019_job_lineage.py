"""jobs carry their ticket's lineage, so Flower links them

``tickets.root_job`` is the Celery id of the ticket's first job, which every job of the
ticket names as its root; ``tasks.parent_job`` the Celery id of the job upstream of a task
(the dependency's attempt whose success released it, or the attempt that split it), which
its jobs name as their parent. Tickets and tasks from before have neither: their jobs are
their own roots.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    # plain ALTERs: SQLite's batch mode would rebuild the tables
    op.add_column("tickets", sa.Column("root_job", sa.String(length=80), nullable=True))
    op.add_column("tasks", sa.Column("parent_job", sa.String(length=80), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE tasks DROP COLUMN parent_job")
    op.execute("ALTER TABLE tickets DROP COLUMN root_job")
