"""Web board sessions. A signed-in browser holds a random session id, never the token; only the
id's digest is stored, with the token it signed in with and an expiry. A session stands for
its token while the token is active and the session unexpired: it is looked up on every board
request (not cached), so signing out or revoking the token ends it at once."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy import delete, select

from omoi.domain.auth import digest
from omoi.persistence import ApiToken, BoardSession, Database
from omoi.persistence.types import utcnow
from omoi.services.tokens import Principal

sessions = BoardSession.__table__
tokens = ApiToken.__table__


def open_session(db: Database, token_id: uuid.UUID, lifetime: float) -> str:
    """A new session for the token, ending ``lifetime`` seconds from now; returns the id the
    cookie carries. Expired sessions are purged here, so the table holds only live ones."""
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    with db.connect() as conn:
        conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
        conn.execute(
            sessions.insert().values(
                digest=digest(secret),
                token_id=token_id,
                created_at=now,
                expires_at=now + timedelta(seconds=lifetime),
            )
        )
    return secret


def principal(db: Database, secret: str) -> Principal | None:
    """Whom the session acts for, or None once it expired, ended or its token was revoked."""
    query = (
        select(tokens)
        .join(sessions, sessions.c.token_id == tokens.c.id)
        .where(
            sessions.c.digest == digest(secret),
            sessions.c.expires_at > utcnow(),
            tokens.c.revoked_at.is_(None),
        )
    )
    with db.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    return Principal(row.id, row.name, frozenset(row.scopes), row.agent_id)


def close(db: Database, secret: str) -> None:
    """Sign out: the session is gone, whoever still holds its id."""
    with db.connect() as conn:
        conn.execute(delete(sessions).where(sessions.c.digest == digest(secret)))
