"""tickets keep the tasks submitted for each phase in ``plan``, out of their context

Re-entering a phase re-creates the tasks submitted for it, the first phase's included, which
the context never held (it was left out to keep a large ticket's context small, since every
external claim carries the context). The plans of later phases move out of the context too:
handlers and external agents no longer receive them. A ticket created before this revision
re-enters its first phase with that phase's templates only.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

POSTGRES = (
    "UPDATE tickets SET plan = context->'planned', context = context - 'planned'"
    " WHERE context ? 'planned'"
)
SQLITE = (
    "UPDATE tickets SET plan = json_extract(context, '$.planned'),"
    " context = json_remove(context, '$.planned')"
    " WHERE json_type(context, '$.planned') IS NOT NULL"
)


def upgrade() -> None:
    # plain ALTERs: SQLite's batch mode rebuilds the table, and dropping the old tickets
    # table would cascade (foreign keys are on) to every task, event and artifact
    op.add_column(
        "tickets", sa.Column("plan", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True)
    )
    op.execute(POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE tickets SET context = context || jsonb_build_object('planned', plan)"
            " WHERE plan IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE tickets SET context = json_set(context, '$.planned', json(plan))"
            " WHERE plan IS NOT NULL"
        )
    op.execute("ALTER TABLE tickets DROP COLUMN plan")
