"""workers record the exec task types they enabled

``agents.enabled_task_types`` lists the exec task types (``shell``, ``http``, those
``OMOI_EXEC_TASK_TYPES`` marks) a Celery worker's operator enabled on it (``omoi worker
--enable``); a queued task of such a type waits, saying so, until a live worker enabled it.
Agents registered before this migration enabled none.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    empty = "'{}'" if op.get_bind().dialect.name == "postgresql" else "'[]'"
    # a plain ALTER: SQLite's batch mode would rebuild the table
    op.add_column(
        "agents",
        sa.Column(
            "enabled_task_types",
            sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql"),
            nullable=False,
            server_default=sa.text(empty),
        ),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE agents DROP COLUMN enabled_task_types")
