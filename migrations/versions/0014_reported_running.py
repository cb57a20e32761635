"""heartbeats report the attempts an agent runs

``tasks.reported_at`` is when the running attempt's agent last said it still runs it;
``agents.reports_running`` marks agents whose heartbeats say so (every Celery worker; external
agents that send ``running``). The agent sweep recovers a running attempt such an agent has
not reported for a heartbeat timeout, although the agent itself is alive.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    # plain ALTERs: SQLite's batch mode would rebuild tasks and lose its expression index
    op.add_column("tasks", sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "agents",
        sa.Column("reports_running", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE agents DROP COLUMN reports_running")
    op.execute("ALTER TABLE tasks DROP COLUMN reported_at")
