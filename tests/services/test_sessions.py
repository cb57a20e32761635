"""Board sessions: a random id of which only the digest is stored, standing for its token
until it expires, is closed, or its token is revoked; expired ones are purged."""

from __future__ import annotations

from sqlalchemy import select

from omoi.domain.auth import digest
from omoi.persistence import Database
from omoi.services import sessions, tokens


def stored(db: Database) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(select(sessions.sessions.c.digest)).scalars())


def test_a_session_stands_for_its_token_and_keeps_only_a_digest(db: Database) -> None:
    made, _ = tokens.create(db, "alice", ["read"])
    secret = sessions.open_session(db, made["id"], lifetime=60)
    assert stored(db) == [digest(secret)]
    principal = sessions.principal(db, secret)
    assert principal is not None and (principal.token_id, principal.name) == (made["id"], "alice")
    assert sessions.principal(db, secret + "x") is None


def test_a_session_ends_when_closed_expired_or_its_token_revoked(db: Database) -> None:
    made, _ = tokens.create(db, "alice", ["read"])
    closed = sessions.open_session(db, made["id"], lifetime=60)
    sessions.close(db, closed)
    assert sessions.principal(db, closed) is None
    expired = sessions.open_session(db, made["id"], lifetime=-1)
    assert sessions.principal(db, expired) is None
    live = sessions.open_session(db, made["id"], lifetime=60)
    assert stored(db) == [digest(live)]  # opening one purged the expired one
    tokens.revoke(db, "alice")
    assert sessions.principal(db, live) is None
