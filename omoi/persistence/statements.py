"""The catalogue of named statements the use cases share (PostgreSQL and embedded SQLite):
each predicate and column list written once, the event log's writers and the task and ticket
transitions.

Hot-path statements are built once with bind parameters: constructing SQLAlchemy statements
per task cost more than running them. The hot-path units of work with a PostgreSQL form of
their own sit in ``claim`` and ``result``, each next to its portable form.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from omoi.domain.enums import AgentStatus, ErrorCategory, TaskStatus, TicketStatus
from omoi.domain.errors import TaskError
from omoi.domain.events import EventType
from omoi.domain.jobs import TITLE_CHARS
from omoi.persistence import actors
from omoi.persistence.db import Database
from omoi.persistence.tables import RUNNING_ATTEMPTS, Agent, Event, PhaseHistory, Task, Ticket
from omoi.persistence.types import utcnow

Executor = Connection | Session
tasks = Task.__table__
agents = Agent.__table__
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
    "logs": 7_340_008,
    "tickets": 7_340_009,
}
# Agents that count as alive: they heartbeat, and their running attempts are theirs.
LIVE_AGENTS = (AgentStatus.IDLE, AgentStatus.BUSY)
T = TypeVar("T")


def lease_held(lease: Any) -> ColumnElement[bool]:
    """The lease guard: the task is running under ``lease``, so the attempt holding that lease
    still owns it and may change it (store its result or artifact, park it, split it)."""
    return and_(tasks.c.status == TaskStatus.RUNNING, tasks.c.lease_token == lease)


def as_sql(expression: Any) -> str:
    """``expression`` as SQL text for the PostgreSQL statements written as text (values
    inlined; a ``literal_column("%(name)s")`` stays a driver placeholder)."""
    return str(expression.compile(compile_kwargs={"literal_binds": True}))


# The lease guard in the PostgreSQL text statements, bound to ``%(lease)s``.
LEASE_HELD_SQL = as_sql(lease_held(literal_column("%(lease)s")))


def of_its_ticket(column: Any, name: str) -> Any:
    """The task's ticket's ``column``, as a subquery on its primary key: no join, so a read
    that locks its task rows (``FOR UPDATE``) locks no ticket, and an ``UPDATE … RETURNING``
    returns it on SQLite too."""
    return (
        select(column)
        .where(tickets.c.id == tasks.c.ticket_id)
        .correlate_except(tickets)
        .scalar_subquery()
        .label(name)
    )


# What its job shows of a task's ticket: its title, clipped (``jobs.clipped``), and its root.
TICKET_TITLE = of_its_ticket(
    func.substr(tickets.c.title, literal_column("1"), literal_column(str(TITLE_CHARS + 1))),
    "ticket_title",
)
ROOT_JOB = of_its_ticket(tickets.c.root_job, "root_job")

# The columns that make a ``Dispatch`` (``Dispatch.of_row``), for every read that feeds one.
DISPATCH_COLUMNS = (
    tasks.c.id,
    tasks.c.attempt,
    tasks.c.capabilities,
    tasks.c.priority,
    tasks.c.timeout_seconds,
    tasks.c.external,
    tasks.c.task_type,
    tasks.c.key,
    tasks.c.parent_job,
    TICKET_TITLE,
    ROOT_JOB,
)


def dispatch_columns_sql(alias: str = "") -> str:
    """``DISPATCH_COLUMNS`` as a text select list: what an ``UPDATE tasks`` returns of each
    row (the ticket's subqueries correlated to it), or by name from ``alias`` (a CTE that
    returned them)."""
    if alias:
        return ", ".join(f"{alias}.{c.name}" for c in DISPATCH_COLUMNS)
    returning = update(tasks).values(attempt=tasks.c.attempt).returning(*DISPATCH_COLUMNS)
    return as_sql(returning).partition(" RETURNING ")[2]


# The running attempt's lease, read by a handler asking whether it should stop.
LEASE_OF = select(tasks.c.lease_token).where(
    tasks.c.id == bindparam("b_id"), tasks.c.status == TaskStatus.RUNNING
)


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


def by_dialect(
    db: Database,
    postgres: Callable[[Any, dict[str, Any]], T],
    portable: Callable[[Connection, dict[str, Any]], T],
    params: dict[str, Any],
    *,
    durable: bool = True,
) -> T:
    """A unit of work in the database's form, retried (``Database.retry``): ``postgres(pg, params)``
    on an autocommit driver connection (``durable=False``: its commit does not wait for the
    WAL flush), or ``portable(conn, params)`` in a Core transaction."""

    def on_postgres() -> T:
        with db.driver(durable=durable) as pg:
            return postgres(pg, params)

    def elsewhere() -> T:
        with db.connect() as conn:
            return portable(conn, params)

    return db.retry(on_postgres if db.dialect == "postgresql" else elsewhere)


def pg_fetch(pg: Any, sql: str, params: dict[str, Any]) -> list[Any]:
    """The rows (named tuples) of a PostgreSQL text statement, run as the bound actor."""
    with pg.cursor(row_factory=namedtuple_row) as cur:
        return cur.execute(sql, {**params, **actors.columns()}).fetchall()


STAMP_PG = (
    "UPDATE tasks SET published_at = %(now)s WHERE id = ANY(%(ids)s) AND attempt = %(attempt)s"
)


def stamp_published(db: Database, by_attempt: dict[int, list[uuid.UUID]], now: datetime) -> None:
    """Stamp ``published_at`` on the tasks of each attempt. On PostgreSQL each attempt's rows
    are one statement that does not wait for the WAL flush; the same updates in one
    transaction elsewhere."""
    if db.dialect == "postgresql":
        with db.driver(durable=False) as pg:
            for attempt, ids in sorted(by_attempt.items()):
                pg.execute(STAMP_PG, {"now": now, "ids": ids, "attempt": attempt})
        return
    with db.connect() as conn:
        for attempt, ids in sorted(by_attempt.items()):
            conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(ids), tasks.c.attempt == attempt)
                .values(published_at=now)
            )


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


# -- the event log and the transitions that write to it ----------------------------------------

INSERT_EVENT = insert(events)
# The same columns in the PostgreSQL text statements, and the actor of the request that runs
# one (an external agent's claim or result).
EVENT_COLUMNS = (
    "type, entity_type, entity_id, ticket_id, payload, created_at, actor_token_id, actor_name"
)
ACTOR = "%(actor_token_id)s::uuid, %(actor_name)s::text"


def event_row(
    type_: EventType,
    entity_type: str,
    entity_id: uuid.UUID | None,
    ticket_id: uuid.UUID | None,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "type": str(type_),
        "entity_type": entity_type,
        "entity_id": entity_id,
        "ticket_id": ticket_id,
        "payload": payload or {},
        "created_at": at or utcnow(),
        **actors.columns(),
    }


def task_event(
    type_: EventType,
    task_id: uuid.UUID,
    ticket_id: uuid.UUID,
    payload: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    return event_row(type_, "task", task_id, ticket_id, payload, at)


def record(conn: Executor, rows: Iterable[dict[str, Any]]) -> None:
    """Append events in one round trip (each names the actor bound when it was made)."""
    batch = list(rows)
    if batch:
        conn.execute(INSERT_EVENT, batch)


def move_ticket(
    conn: Executor,
    ticket_id: uuid.UUID,
    from_phase: str,
    to_phase: str,
    status: TicketStatus,
    reason: str,
    by: str = "system",
    note: str | None = None,
) -> None:
    """Change a ticket's phase, writing its history row and event in the caller's transaction.
    ``by`` is who moves it (a token's name, or the gate); ``note`` what a client says about it."""
    now = utcnow()
    conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket_id)
        .values(phase=to_phase, previous_phase=from_phase, status=status, updated_at=now)
    )
    conn.execute(
        insert(PhaseHistory.__table__),
        [
            {
                "ticket_id": ticket_id,
                "from_phase": from_phase,
                "to_phase": to_phase,
                "reason": reason,
                "by": by,
                "note": note,
                "artifacts": [],
                "created_at": now,
            }
        ],
    )
    payload = {"from": from_phase, "to": str(to_phase), "status": str(status), "reason": reason}
    record(
        conn,
        [event_row(EventType.TICKET_PHASE_CHANGED, "ticket", ticket_id, ticket_id, payload, now)],
    )


def cancel_rows(conn: Connection, ticket_id: uuid.UUID, where: Any, reason: str) -> list[Any]:
    """Mark open tasks cancelled; returns ``(id, status, celery_id)`` as they were."""
    now = utcnow()
    error = TaskError(ErrorCategory.CANCELLED, "Cancelled", reason).as_dict()
    before = conn.execute(
        select(tasks.c.id, tasks.c.status, tasks.c.celery_id).where(where).with_for_update()
    ).all()
    if before:
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_([r.id for r in before]))
            .values(
                status=TaskStatus.CANCELLED,
                error=error,
                lease_token=None,
                finished_at=now,
                next_attempt_at=None,
            )
        )
        record(
            conn,
            (
                task_event(
                    EventType.TASK_CANCELLED, r.id, ticket_id, {**error, "was": r.status}, now
                )
                for r in before
            ),
        )
    return before


def running_count(agent_id: Any) -> Any:
    """How many attempts the agent (an id or ``agents.c.id``) runs now, as a subquery."""
    return (
        select(func.count()).where(tasks.c.agent_id == agent_id, RUNNING_ATTEMPTS).scalar_subquery()
    )


def overdue(timeout: float, now: datetime) -> Any:
    """An agent whose last heartbeat (or registration) is older than ``timeout``."""
    cutoff = now - timedelta(seconds=timeout)
    return func.coalesce(agents.c.last_heartbeat, agents.c.registered_at) < cutoff
