"""agents: tasks for external agents, claim ordering index, agent lookups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

PRIORITY_RANK = (
    "(CASE priority WHEN 'CRITICAL' THEN 0 WHEN 'HIGH' THEN 1 WHEN 'MEDIUM' THEN 2 "
    "WHEN 'LOW' THEN 3 END)"
)


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(
        "ix_tasks_claimable",
        "tasks",
        [sa.text(PRIORITY_RANK), "queued_at"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_tasks_agent",
        "tasks",
        ["agent_id"],
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_index("ix_agents_status", "agents", ["status", "kind"])


def downgrade() -> None:
    op.drop_index("ix_agents_status", table_name="agents")
    op.drop_index("ix_tasks_agent", table_name="tasks")
    op.drop_index("ix_tasks_claimable", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("external")
