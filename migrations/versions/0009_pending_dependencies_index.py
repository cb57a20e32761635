"""the dependencies GIN index holds pending tasks only

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _index(where: str | None) -> None:
    op.drop_index("ix_tasks_dependencies", table_name="tasks")
    op.create_index(
        "ix_tasks_dependencies",
        "tasks",
        ["dependencies"],
        postgresql_using="gin",
        postgresql_ops={"dependencies": "jsonb_path_ops"},
        postgresql_where=sa.text(where) if where else None,
    )


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":  # SQLite has no such index
        _index("status = 'pending'")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _index(None)
