"""events name who made them; idempotency keys are scoped to the token that sent them

``events.actor_token_id`` / ``actor_name``: the API token whose request wrote the event (null
for workers' and beat's own changes and for every event before this revision), with partial
indexes for ``GET /api/v1/events?actor=``. ``approvals.note`` and ``phase_history.note`` keep
a client-supplied name (who approves or moves a ticket is now the token). ``tickets.submitter_token_id`` is the token that submitted a
ticket; ``Idempotency-Key`` becomes unique per (token, key) instead of across all tokens.
Tickets from before have no token and keep their keys unique among themselves.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from contextlib import AbstractContextManager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from omoi.persistence.migrate import sqlite_rebuilt

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

OLD_UNIQUE = "tickets_idempotency_key_key"  # PostgreSQL's name for 0001's unnamed constraint
SCOPED = "idempotency_key IS NOT NULL AND submitter_token_id IS NOT NULL"
UNSCOPED = "idempotency_key IS NOT NULL AND submitter_token_id IS NULL"
# the older schema holds each key once: keep it on the first ticket that used it
SHARED_KEYS = (
    "UPDATE tickets SET idempotency_key = NULL WHERE EXISTS ("
    " SELECT 1 FROM tickets AS o WHERE o.idempotency_key = tickets.idempotency_key"
    " AND (o.created_at, CAST(o.id AS TEXT)) < (tickets.created_at, CAST(tickets.id AS TEXT)))"
)


def _where(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _tickets_rebuilt() -> AbstractContextManager[BatchOperations]:
    """SQLite drops or adds a table constraint only by rebuilding the table."""
    return sqlite_rebuilt(
        "tickets", naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"}
    )


def upgrade() -> None:
    # plain ALTERs: SQLite's batch mode would rebuild events and approvals
    op.add_column("events", sa.Column("actor_token_id", sa.Uuid(), nullable=True))
    op.add_column("events", sa.Column("actor_name", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_events_actor_token",
        "events",
        ["actor_token_id", "id"],
        **_where("actor_token_id IS NOT NULL"),
    )
    op.create_index(
        "ix_events_actor_name", "events", ["actor_name", "id"], **_where("actor_name IS NOT NULL")
    )
    op.add_column("approvals", sa.Column("note", sa.String(length=200), nullable=True))
    op.add_column("phase_history", sa.Column("note", sa.String(length=200), nullable=True))
    op.add_column("tickets", sa.Column("submitter_token_id", sa.Uuid(), nullable=True))
    if _sqlite():
        with _tickets_rebuilt() as batch:
            batch.drop_constraint("uq_tickets_idempotency_key", type_="unique")
    else:
        op.drop_constraint(OLD_UNIQUE, "tickets", type_="unique")
    op.create_index(
        "uq_tickets_token_idempotency_key",
        "tickets",
        ["submitter_token_id", "idempotency_key"],
        unique=True,
        **_where(SCOPED),
    )
    op.create_index(
        "uq_tickets_idempotency_key_unscoped",
        "tickets",
        ["idempotency_key"],
        unique=True,
        **_where(UNSCOPED),
    )


def downgrade() -> None:
    op.drop_index("uq_tickets_idempotency_key_unscoped", table_name="tickets")
    op.drop_index("uq_tickets_token_idempotency_key", table_name="tickets")
    op.execute(SHARED_KEYS)
    if _sqlite():
        with _tickets_rebuilt() as batch:
            batch.create_unique_constraint("uq_tickets_idempotency_key", ["idempotency_key"])
            batch.drop_column("submitter_token_id")
    else:
        op.create_unique_constraint(OLD_UNIQUE, "tickets", ["idempotency_key"])
        op.drop_column("tickets", "submitter_token_id")
    op.execute("ALTER TABLE phase_history DROP COLUMN note")
    op.execute("ALTER TABLE approvals DROP COLUMN note")
    op.drop_index("ix_events_actor_name", table_name="events")
    op.drop_index("ix_events_actor_token", table_name="events")
    op.execute("ALTER TABLE events DROP COLUMN actor_name")
    op.execute("ALTER TABLE events DROP COLUMN actor_token_id")
