"""locks: resources, held locks, tasks waiting for a lock

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "resource_locks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("holder_task", sa.Uuid(), nullable=False),
        sa.Column("fencing", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("mode IN ('exclusive', 'shared')", name="ck_resource_locks_mode"),
        sa.ForeignKeyConstraint(["holder_task"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["name"],
            ["resources.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_resource_locks_holder", "resource_locks", ["holder_task"], unique=False)
    op.create_index("ix_resource_locks_name", "resource_locks", ["name"], unique=False)
    # plain ALTERs: SQLite's batch mode would rebuild tasks and lose its expression index
    op.add_column("tasks", sa.Column("waiting_for", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_tasks_waiting",
        "tasks",
        ["waiting_for"],
        unique=False,
        postgresql_where=sa.text("waiting_for IS NOT NULL"),
        sqlite_where=sa.text("waiting_for IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_tasks_waiting",
        table_name="tasks",
        postgresql_where=sa.text("waiting_for IS NOT NULL"),
        sqlite_where=sa.text("waiting_for IS NOT NULL"),
    )
    op.execute("ALTER TABLE tasks DROP COLUMN waiting_for")
    op.drop_index("ix_resource_locks_name", table_name="resource_locks")
    op.drop_index("ix_resource_locks_holder", table_name="resource_locks")
    op.drop_table("resource_locks")
    op.drop_table("resources")
