"""board sessions: the web board's cookie is a random session id, stored as its digest

A session names the token it signed in with (and ends with it: cascade on delete, and a
revoked token's sessions are refused) and expires after ``OMOI_BOARD_SESSION_LIFETIME``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "board_sessions",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_board_sessions_token_id", "board_sessions", ["token_id"])
    op.create_index("ix_board_sessions_expires_at", "board_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("board_sessions")
