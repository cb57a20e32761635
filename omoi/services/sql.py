"""Dialect-aware SQL shared by the use cases (PostgreSQL and embedded SQLite).

Hot-path statements are built once with bind parameters: constructing SQLAlchemy statements
per task cost more than running them.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from omoi.domain.enums import TaskStatus
from omoi.persistence import Event, Task, Ticket

Executor = Connection | Session
tasks = Task.__table__
events = Event.__table__
tickets = Ticket.__table__

# Advisory lock keys for the periodic sweeps, so two beats never run one concurrently.
SWEEP_LOCKS = {
    "outbox": 7_340_001,
    "retries": 7_340_002,
    "deadlines": 7_340_003,
    "agents": 7_340_004,
    "gates": 7_340_005,
    "locks": 7_340_006,
    "sync": 7_340_007,
}
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure
T = TypeVar("T")


def dialect_of(conn: Executor) -> str:
    bind = conn.get_bind() if isinstance(conn, Session) else conn
    return bind.dialect.name


def _depends_on(dialect: str, name: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return tasks.c.dependencies.op("@>")(bindparam(name, type_=JSONB))
    return text(  # type: ignore[return-value]
        "EXISTS (SELECT 1 FROM json_each(tasks.dependencies, '$.depends_on') "
        f"WHERE json_each.value = :{name})"
    )


def _needle(dialect: str, task_id: uuid.UUID) -> object:
    return {"depends_on": [str(task_id)]} if dialect == "postgresql" else str(task_id)


@cache
def depends_on_one(dialect: str) -> ColumnElement[bool]:
    """Rows whose ``depends_on`` names ``:dep0`` (GIN ``@>`` on PostgreSQL)."""
    return _depends_on(dialect, "dep0")


def depends_on_params(dialect: str, task_ids: Sequence[uuid.UUID]) -> dict[str, object]:
    return {f"dep{n}": _needle(dialect, t) for n, t in enumerate(task_ids)}


def depends_on_any(dialect: str, task_ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
    """Rows whose ``depends_on`` names any of ``task_ids``; bind with ``depends_on_params``."""
    return or_(*(_depends_on(dialect, f"dep{n}") for n in range(len(task_ids))))


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows: PostgreSQL's COPY (an order of magnitude faster than a multi-row
    INSERT for a 10,000-task ticket), executemany elsewhere. Rows must share their keys."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    names = list(rows[0])
    json_columns = {
        c.name for c in table.columns if isinstance(c.type.dialect_impl(conn.dialect), JSONB)
    }
    columns = ", ".join(f'"{n}"' for n in names)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([Jsonb(row[n]) if n in json_columns else row[n] for n in names])


def move_tasks(
    conn: Connection, ids: Sequence[uuid.UUID], leaving: str | Sequence[str], **values: Any
) -> list[uuid.UUID]:
    """The one form of a task transition: rows move only from the status they leave, and the
    caller counts what this returns, the rows it changed. Two transactions racing to move the
    same row (two failed dependencies cancelling their dependent) then move it once: the loser's
    UPDATE waits for the winner's row lock and re-checks the status it leaves."""
    if not ids:
        return []
    statuses = [leaving] if isinstance(leaving, str) else list(leaving)
    return list(
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(list(ids)), tasks.c.status.in_(statuses))
            .values(**values)
            .returning(tasks.c.id)
        ).scalars()
    )


def dependents(
    conn: Connection,
    ticket_id: uuid.UUID,
    of: Sequence[uuid.UUID],
    status: str,
    *columns: Any,
    lock: bool = False,
) -> list[Any]:
    """``columns`` of the ticket's tasks in ``status`` that depend on any of ``of``; with
    ``lock``, row-locked in id order (so concurrent lockers cannot deadlock), and a row another
    transaction moved out of ``status`` meanwhile is left out."""
    dialect = dialect_of(conn)
    query = select(*columns).where(tasks.c.status == status, depends_on_any(dialect, of))
    if lock:
        query = query.order_by(tasks.c.id).with_for_update()
    # A task id names one ticket's task, and on PostgreSQL the GIN index over pending tasks
    # finds their dependents alone: naming the ticket too let the planner, on statistics from
    # before the ticket's tasks existed, walk all of them through the ticket's index instead.
    # Other statuses (and SQLite, without that index) read the ticket's tasks.
    if dialect != "postgresql" or status != TaskStatus.PENDING:
        query = query.where(tasks.c.ticket_id == ticket_id)
    return list(conn.execute(query, depends_on_params(dialect, of)))


@contextmanager
def sweep_lock(conn: Executor, name: str) -> Iterator[bool]:
    """Transaction-scoped advisory lock; yields False when another sweeper holds it."""
    if dialect_of(conn) != "postgresql":
        yield True  # SQLite: BEGIN IMMEDIATE already serializes writers
        return
    got = conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCKS[name]}
    ).scalar_one()
    yield bool(got)


# How long a unit of work waits for a database that went away (a restart, a failover) before
# giving up. Workers set it high: a finished handler's result must be stored, not dropped. The
# API keeps it short and answers 503 instead, so clients retry rather than hang.
OUTAGE_PATIENCE = {"seconds": 1.0}
DISCONNECT_SQLSTATES = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def wait_out_outages(seconds: float) -> None:
    """Set this process's patience with a database outage (see ``OUTAGE_PATIENCE``)."""
    OUTAGE_PATIENCE["seconds"] = seconds


def disconnected(exc: BaseException) -> bool:
    """The database is unreachable or went away (as opposed to refusing the statement)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in DISCONNECT_SQLSTATES


def refused_data(exc: BaseException) -> bool:
    """The database refused a statement's values (a value jsonb cannot hold, a bind that
    could not be encoded): sending it again cannot help."""
    if isinstance(exc, DBAPIError):
        return isinstance(exc.orig, psycopg.DataError | sqlite3.DataError)
    return isinstance(exc, psycopg.DataError | StatementError)


def retry_db(fn: Callable[[], T], attempts: int = 5) -> T:
    """Re-run a transaction that lost a deadlock or serialization race (``attempts`` times),
    or whose database went away (until ``OUTAGE_PATIENCE`` runs out, backing off to 1 s)."""
    races = 0
    outage_deadline: float | None = None
    pause = 0.05
    while True:
        try:
            return fn()
        except (DBAPIError, psycopg.OperationalError) as exc:
            if disconnected(exc):
                now = time.monotonic()
                outage_deadline = outage_deadline or now + OUTAGE_PATIENCE["seconds"]
                if now >= outage_deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            races += 1
            state = getattr(getattr(exc, "orig", exc), "sqlstate", None)
            if state not in RETRYABLE_SQLSTATES or races == attempts:
                raise
            time.sleep(0.01 * races)
