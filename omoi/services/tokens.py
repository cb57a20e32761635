"""API tokens: create, list, revoke, authenticate, bind an agent token to its agent."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from omoi.domain.auth import digest, new_secret, parse_scopes
from omoi.persistence import ApiToken, Database
from omoi.persistence.types import utcnow
from omoi.services.errors import Invalid, NotFound

tokens = ApiToken.__table__


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    token_id: uuid.UUID
    name: str
    scopes: frozenset[str]
    agent_id: uuid.UUID | None


def _row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "scopes": list(row.scopes),
        "agent_id": row.agent_id,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


def create(
    db: Database, name: str, scopes: list[str], secret: str | None = None
) -> tuple[dict[str, Any], str]:
    """A new token; the secret is returned once and only its digest is kept."""
    try:
        granted = parse_scopes(scopes)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    if not granted:
        raise Invalid("a token needs at least one scope")
    secret = secret or new_secret()
    with db.connect() as conn:
        row = conn.execute(
            tokens.insert()
            .values(id=uuid.uuid4(), name=name, digest=digest(secret), scopes=granted)
            .values(created_at=utcnow())
            .returning(*tokens.c)
        ).one()
    return _row(row), secret


def ensure(db: Database, name: str, secret: str, scopes: list[str]) -> None:
    """Make a configured secret (``OMOI_BOOTSTRAP_TOKEN``) a token, once. API processes
    starting together race to insert it: the loser finds the winner's row and goes on."""

    def exists() -> bool:
        with db.connect() as conn:
            query = select(tokens.c.id).where(tokens.c.digest == digest(secret))
            return conn.execute(query).first() is not None

    if exists():
        return
    try:
        create(db, name, scopes, secret)
    except IntegrityError:
        if not exists():
            raise


def list_tokens(db: Database) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(select(tokens).order_by(tokens.c.created_at)).all()
    return [_row(r) for r in rows]


def any_active(db: Database) -> bool:
    with db.connect() as conn:
        active = conn.execute(select(tokens.c.id).where(tokens.c.revoked_at.is_(None)))
        return active.first() is not None


def revoke(db: Database, ref: str) -> int:
    """Revoke by id or by name; how many tokens were revoked (NotFound when none matched)."""
    try:
        match = tokens.c.id == uuid.UUID(ref)
    except ValueError:
        match = tokens.c.name == ref
    with db.connect() as conn:
        done = conn.execute(
            update(tokens).where(match, tokens.c.revoked_at.is_(None)).values(revoked_at=utcnow())
        ).rowcount
    if not done:
        raise NotFound(f"no active token {ref!r}")
    return int(done)


def active_among(db: Database, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these tokens are not revoked."""
    if not ids:
        return set()
    with db.connect() as conn:
        query = select(tokens.c.id).where(tokens.c.id.in_(ids), tokens.c.revoked_at.is_(None))
        return set(conn.execute(query).scalars())


def bind_agent(db: Database, token_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """An agent token acts as the agent it registered last (a restarted agent is new)."""
    with db.connect() as conn:
        conn.execute(update(tokens).where(tokens.c.id == token_id).values(agent_id=agent_id))


class Authenticator:
    """Digest lookups cached for ``ttl`` seconds per process, so a request costs no query;
    a revocation or a new agent binding is seen within ``ttl``."""

    def __init__(self, db: Database, ttl: float = 2.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> Principal | None:
        """The principal this process looked up for ``secret`` within ``ttl``, if valid; no
        query (the API's limit on strangers is checked only when this misses)."""
        with self._lock:
            hit = self._cache.get(digest(secret))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def __call__(self, secret: str) -> Principal | None:
        key = digest(secret)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.db.connect() as conn:
            row = conn.execute(
                select(tokens).where(tokens.c.digest == key, tokens.c.revoked_at.is_(None))
            ).first()
        found = (
            None
            if row is None
            else Principal(row.id, row.name, frozenset(row.scopes), row.agent_id)
        )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, found)
        return found

    def forget(self, secret: str) -> None:
        """Drop a cached lookup this process has just made stale (an agent binding)."""
        with self._lock:
            self._cache.pop(digest(secret), None)
