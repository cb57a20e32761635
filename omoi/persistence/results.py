"""Storing a result, both forms side by side: under the lease guard the task becomes
succeeded with its event, its pending dependents are released (those whose last dependency
this was become queued, with their events), and the ticket's open-task counter counts it.

On PostgreSQL it runs as one autocommit round trip, a data-modifying CTE (``SUCCEED_PG``);
on the embedded SQLite as a multi-statement transaction (``succeed_portable``), whose caller
counts the ticket in the same transaction (``phases.close_tasks``, which judges the gate of
the phase's last task there; on PostgreSQL the caller judges it after the statement). A change
to one form is made to the other here too: the tests run the first on PostgreSQL and the
second on the default.

Dependents are found by the GIN index alone, as in ``statements.dependents`` (which says why).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, bindparam, case, update

from omoi.domain.enums import TaskStatus
from omoi.domain.events import EventType
from omoi.persistence.db import Database
from omoi.persistence.statements import (
    ACTOR,
    DISPATCH_COLUMNS,
    EVENT_COLUMNS,
    LEASE_HELD_SQL,
    depends_on_one,
    depends_on_params,
    dialect_of,
    dispatch_columns_sql,
    lease_held,
    pg_fetch,
    record,
    task_event,
    tasks,
)
from omoi.persistence.types import utcnow

SUCCEED_PG = f"""
WITH finished AS (
    UPDATE tasks
       SET status = '{TaskStatus.SUCCEEDED}', result = %(result)s, error = NULL,
           finished_at = %(now)s, lease_token = NULL
     WHERE id = %(id)s AND {LEASE_HELD_SQL}
 RETURNING id, celery_id
), released AS (
    UPDATE tasks
       SET unmet_dependencies = unmet_dependencies - 1,
           parent_job = (SELECT celery_id FROM finished),
           status = CASE WHEN unmet_dependencies = 1 THEN '{TaskStatus.QUEUED}' ELSE status END,
           attempt = CASE WHEN unmet_dependencies = 1 THEN attempt + 1 ELSE attempt END,
           queued_at = CASE WHEN unmet_dependencies = 1 THEN %(now)s ELSE queued_at END
     WHERE status = '{TaskStatus.PENDING}' AND dependencies @> %(needle)s
       AND EXISTS (SELECT 1 FROM finished)
 RETURNING status, {dispatch_columns_sql()}
), logged AS (
    INSERT INTO events ({EVENT_COLUMNS})
    SELECT '{EventType.TASK_SUCCEEDED}', 'task', id, %(ticket)s,
           jsonb_build_object('attempt', %(attempt)s), %(now)s, {ACTOR} FROM finished
    UNION ALL
    SELECT '{EventType.TASK_QUEUED}', 'task', id, %(ticket)s,
           jsonb_build_object('attempt', attempt), %(now)s, {ACTOR}
      FROM released WHERE status = '{TaskStatus.QUEUED}'
    UNION ALL
    SELECT '{EventType.TASK_SUPERSEDED}', 'task', %(id)s, %(ticket)s,
           jsonb_build_object('attempt', %(attempt)s), %(now)s, {ACTOR}
     WHERE NOT EXISTS (SELECT 1 FROM finished)
), counted AS (
    UPDATE tickets SET open_tasks = open_tasks - 1, updated_at = %(now)s
     WHERE id = %(ticket)s AND EXISTS (SELECT 1 FROM finished)
 RETURNING open_tasks
)
SELECT (SELECT count(*) FROM finished) AS landed,
       (SELECT open_tasks FROM counted) AS open_tasks,
       r.status, {dispatch_columns_sql("r")}
  FROM (SELECT 1) AS one LEFT JOIN released AS r ON r.status = '{TaskStatus.QUEUED}'
"""

FINISH = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"), lease_held(bindparam("b_lease")))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        finished_at=bindparam("b_now"),
        lease_token=None,
    )
    .returning(tasks.c.id, tasks.c.celery_id)
)
_becomes_ready = tasks.c.unmet_dependencies == 1
RELEASE_VALUES = {
    "unmet_dependencies": tasks.c.unmet_dependencies - 1,
    # the last dependency to succeed is the one that releases it: its job is the parent
    "parent_job": bindparam("b_parent"),
    "status": case((_becomes_ready, TaskStatus.QUEUED.value), else_=tasks.c.status),
    "attempt": case((_becomes_ready, tasks.c.attempt + 1), else_=tasks.c.attempt),
    "queued_at": case((_becomes_ready, bindparam("b_now")), else_=tasks.c.queued_at),
}


@cache
def release_statement(dialect: str) -> Any:
    return (
        update(tasks)
        .where(
            tasks.c.ticket_id == bindparam("b_ticket"),
            tasks.c.status == TaskStatus.PENDING,
            depends_on_one(dialect),
        )
        .values(**RELEASE_VALUES)
        .returning(tasks.c.status, *DISPATCH_COLUMNS)
    )


def succeed_postgres(db: Database, params: dict[str, Any]) -> tuple[bool, list[Any], int]:
    """Whether the result landed, the dependents it made ready (``DISPATCH_COLUMNS``) and the
    ticket's open tasks left. ``params``: id, lease, ticket, attempt, result. The statement
    retries itself."""
    full = {
        **params,
        "now": utcnow(),
        "result": Jsonb(params["result"]),
        "needle": Jsonb({"depends_on": [str(params["id"])]}),
    }

    def statement() -> list[Any]:
        with db.driver() as pg:  # one row per dependent made ready (``id`` NULL when none)
            return pg_fetch(pg, SUCCEED_PG, full)

    rows = db.retry(statement)
    return bool(rows[0].landed), [r for r in rows if r.id is not None], rows[0].open_tasks


def succeed_portable(conn: Connection, params: dict[str, Any]) -> tuple[bool, list[Any]]:
    """Whether the result landed and the dependents it made ready (``DISPATCH_COLUMNS``); the
    caller counts the ticket in the same transaction. ``params`` as ``succeed_postgres``."""
    finished = finish(conn, params, TaskStatus.SUCCEEDED, result=params["result"])
    if finished is None:
        return False, []
    event = task_event(
        EventType.TASK_SUCCEEDED, params["id"], params["ticket"], {"attempt": params["attempt"]}
    )
    record(conn, [event])
    return True, release_dependents(conn, params, finished.celery_id)


def finish(
    conn: Connection,
    params: dict[str, Any],
    status: TaskStatus,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> Any:
    """The lease guard: the outcome lands only if this attempt still owns the row. Returns
    the row it finished (its id and Celery id), or None."""
    hit = conn.execute(
        FINISH,
        {
            "b_id": params["id"],
            "b_lease": params["lease"],
            "b_status": status,
            "b_result": result,
            "b_error": error,
            "b_now": utcnow(),
        },
    ).one_or_none()
    if hit is None:
        superseded = {"attempt": params["attempt"]}
        record(
            conn,
            [task_event(EventType.TASK_SUPERSEDED, params["id"], params["ticket"], superseded)],
        )
    return hit


def release_dependents(conn: Connection, params: dict[str, Any], job: str | None) -> list[Any]:
    """Count the task as done in its pending dependents, its ``job`` their parent; returns
    those it made ready."""
    now = utcnow()
    dialect = dialect_of(conn)
    rows = conn.execute(
        release_statement(dialect),
        {
            "b_ticket": params["ticket"],
            "b_now": now,
            "b_parent": job,
            **depends_on_params(dialect, [params["id"]]),
        },
    ).all()
    ready = [r for r in rows if r.status == TaskStatus.QUEUED]
    record(
        conn,
        (
            task_event(EventType.TASK_QUEUED, r.id, params["ticket"], {"attempt": r.attempt}, now)
            for r in ready
        ),
    )
    return ready
