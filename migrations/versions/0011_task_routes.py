"""tasks carry their route; queued tasks are indexed by who may take them

``route`` is the capability that picks a task's queue (its first, or ``default``). The one
index over queued tasks now leads with ``external`` and ``route``, so an external agent's
claim probes the few (external, route) pairs it may take, each an ordered index scan, instead
of walking every queued task in claim order past those Celery workers will take.

It rewrites every task row that has capabilities, history included, holding the table's
lock: on a large database, run it in a quiet moment.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

PRIORITY_RANK = (
    "(CASE priority WHEN 'CRITICAL' THEN 0 WHEN 'HIGH' THEN 1 WHEN 'MEDIUM' THEN 2 "
    "WHEN 'LOW' THEN 3 END)"
)
QUEUED = "status = 'queued'"
FIRST_CAPABILITY = {
    "postgresql": "UPDATE tasks SET route = capabilities[1] WHERE cardinality(capabilities) > 0",
    "sqlite": "UPDATE tasks SET route = json_extract(capabilities, '$[0]')"
    " WHERE json_array_length(capabilities) > 0",
}


def _claimable(*columns: str) -> None:
    op.drop_index("ix_tasks_claimable", table_name="tasks")
    op.create_index(
        "ix_tasks_claimable",
        "tasks",
        [*columns, sa.text(PRIORITY_RANK), "queued_at"],
        postgresql_where=sa.text(QUEUED),
        sqlite_where=sa.text(QUEUED),
    )


def upgrade() -> None:
    # A plain ALTER: SQLite's batch mode would rebuild tasks and lose its expression index.
    # The default only fills the existing rows: on PostgreSQL it is dropped again, so a writer
    # that forgot the route fails instead of routing a task to ``default``. SQLite cannot drop
    # a column's default without rebuilding the table; it keeps it.
    op.add_column("tasks", sa.Column("route", sa.Text(), nullable=False, server_default="default"))
    dialect = op.get_context().dialect.name
    op.execute(FIRST_CAPABILITY[dialect])
    if dialect == "postgresql":
        op.alter_column("tasks", "route", server_default=None)
    _claimable("external", "route")


def downgrade() -> None:
    _claimable()
    op.execute("ALTER TABLE tasks DROP COLUMN route")
