"""statements about one task take the primary key; dependents are found by the GIN index

On statistics taken at a quiet moment (nothing running, no pending tasks), the planner chose
the small-looking partial indexes for per-task statements and walked every row in them: a
result with 5,000 tasks running read all 5,000 through ``ix_tasks_agent``; releasing the
dependents of a task in a 10,000-task chain read the ticket's pending tasks through
``ix_tasks_pending``. ``ix_tasks_agent`` now states ``started_at IS NOT NULL``, which only the
sweeps say, and PostgreSQL drops ``ix_tasks_pending``: the GIN index over pending tasks'
dependencies finds dependents alone. SQLite keeps it; it has no GIN index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _agent_index(where: str) -> None:
    op.drop_index("ix_tasks_agent", table_name="tasks")
    op.create_index(
        "ix_tasks_agent",
        "tasks",
        ["agent_id"],
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    _agent_index("status = 'running' AND started_at IS NOT NULL")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_tasks_pending", table_name="tasks")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_tasks_pending",
            "tasks",
            ["ticket_id"],
            postgresql_where=sa.text("status = 'pending'"),
        )
    _agent_index("status = 'running'")
