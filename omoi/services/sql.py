"""Dialect-aware SQL fragments shared by the use cases (PostgreSQL and embedded SQLite)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import ColumnElement, or_, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql import literal

from omoi.models import Task

# Advisory lock keys for the periodic sweeps, so two beats never run one concurrently.
SWEEP_LOCKS = {"outbox": 7_340_001}


def _depends_on(dialect: str, task_id: uuid.UUID, n: int) -> ColumnElement[bool]:
    if dialect == "postgresql":
        needle = literal({"depends_on": [str(task_id)]}, JSONB)
        return Task.dependencies.op("@>")(needle)
    return text(
        f"EXISTS (SELECT 1 FROM json_each(tasks.dependencies, '$.depends_on') "
        f"WHERE json_each.value = :dep{n})"
    ).bindparams(**{f"dep{n}": str(task_id)})


def depends_on_any(dialect: str, task_ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
    """Rows whose ``depends_on`` names any of ``task_ids`` (GIN ``@>`` on PostgreSQL)."""
    return or_(*(_depends_on(dialect, t, n) for n, t in enumerate(task_ids)))


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


@contextmanager
def sweep_lock(session: Session, name: str) -> Iterator[bool]:
    """Transaction-scoped advisory lock; yields False when another sweeper holds it."""
    if dialect_of(session) != "postgresql":
        yield True  # SQLite: BEGIN IMMEDIATE already serializes writers
        return
    got = session.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCKS[name]}
    ).scalar_one()
    yield bool(got)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
