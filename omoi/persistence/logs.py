"""Appending lines to an attempt's log, both forms side by side: numbered after the attempt's
last line, at most ``cap`` of them, then one truncation marker at ``cap + 1`` (stream
``omoi``), after which nothing more is stored.

On PostgreSQL one autocommit round trip (a data-modifying CTE over the batch as arrays, the
same text whatever its size); on the embedded SQLite the same steps in a transaction. A
change to one form is made to the other here too.

Two writers of one attempt (the worker whose task was handed to an agent, and that agent)
may number the same line at once: the loser's insert breaks the primary key and is run
again, numbered after the winner's lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from omoi.domain.enums import LogStream
from omoi.persistence.db import Database
from omoi.persistence.statements import LEASE_HELD_SQL, by_dialect, lease_held, pg_fetch, tasks
from omoi.persistence.tables import TaskLog
from omoi.persistence.types import utcnow

task_logs = TaskLog.__table__
MARKER_STREAM = LogStream.OMOI.value
UNIQUE_VIOLATION = "23505"
RENUMBERINGS = 3  # a concurrent writer of the same attempt, at most this often in a row

# The attempt written to: the writer's own (a worker knows the attempt it runs), or the one
# the lease holds (an external agent's lease; none when it no longer holds the task).
OWN_ATTEMPT = "SELECT %(attempt)s::int AS attempt"
HELD_ATTEMPT = f"SELECT attempt FROM tasks WHERE id = %(task)s AND {LEASE_HELD_SQL}"

APPEND_PG = """
WITH owner AS ({owner}),
base AS (
    SELECT o.attempt, COALESCE((SELECT max(seq) FROM task_logs
                                 WHERE task_id = %(task)s AND attempt = o.attempt), 0) AS n
      FROM owner o
), stored AS (
    INSERT INTO task_logs (task_id, attempt, seq, at, stream, line)
    SELECT %(task)s, b.attempt, b.n + l.ord, l.at, l.stream, l.line
      FROM base b,
           unnest(%(ats)s::timestamptz[], %(streams)s::text[], %(lines)s::text[])
           WITH ORDINALITY AS l(at, stream, line, ord)
     WHERE b.n + l.ord <= %(cap)s
    UNION ALL
    SELECT %(task)s, b.attempt, %(cap)s + 1, %(now)s, '{marker}', %(marker)s
      FROM base b
     WHERE b.n <= %(cap)s AND b.n + cardinality(%(lines)s::text[]) > %(cap)s
    RETURNING seq
)
SELECT b.attempt, b.n AS before, (SELECT count(*) FROM stored) AS stored
  FROM base b
"""
APPEND_OWN_PG = APPEND_PG.format(owner=OWN_ATTEMPT, marker=MARKER_STREAM)
APPEND_HELD_PG = APPEND_PG.format(owner=HELD_ATTEMPT, marker=MARKER_STREAM)


@dataclass(frozen=True)
class Appended:
    """What an append did: whether the writer may write (its lease holds; always for a
    worker), the attempt written to, how many lines it had before and how many were stored
    (the marker included). Fewer stored than sent: the attempt's log is full."""

    held: bool
    attempt: int | None = None
    before: int = 0
    stored: int = 0

    def full(self, cap: int) -> bool:
        """Whether the attempt's log now ends with its truncation marker."""
        return self.before + self.stored > cap


NOT_HELD = Appended(held=False)


def append(
    db: Database,
    task_id: Any,
    lines: list[tuple[datetime, str, str]],
    *,
    cap: int,
    marker: str,
    attempt: int | None = None,
    lease: Any = None,
    durable: bool = True,
) -> Appended:
    """Append ``lines`` (``(at, stream, line)``, in order) to attempt ``attempt`` of the task,
    or, given a ``lease`` instead, to the attempt that lease holds (nothing when it holds
    none). ``durable=False`` commits without waiting for the WAL flush (see
    ``Database.driver``)."""
    params = {
        "task": task_id,
        "attempt": attempt,
        "lease": lease,
        "rows": lines,
        "cap": cap,
        "marker": marker,
        "now": utcnow(),
    }
    renumbered = 0
    while True:
        try:
            return by_dialect(db, _append_postgres, _append_portable, params, durable=durable)
        except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
            if _sqlstate(exc) != UNIQUE_VIOLATION or renumbered == RENUMBERINGS:
                raise
            renumbered += 1


def _sqlstate(exc: Exception) -> str | None:
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    if state is None and "UNIQUE constraint failed" in str(orig):  # SQLite names no state
        return UNIQUE_VIOLATION
    return state


def _append_postgres(pg: Any, p: dict[str, Any]) -> Appended:
    sql = APPEND_OWN_PG if p["lease"] is None else APPEND_HELD_PG
    rows = p["rows"]
    columns = {
        "ats": [at for at, _, _ in rows],
        "streams": [stream for _, stream, _ in rows],
        "lines": [line for _, _, line in rows],
    }
    found = pg_fetch(pg, sql, {**p, **columns})
    if not found:
        return NOT_HELD
    row = found[0]
    return Appended(True, row.attempt, row.before, row.stored)


def _append_portable(conn: Connection, p: dict[str, Any]) -> Appended:
    attempt = p["attempt"]
    if p["lease"] is not None:
        attempt = conn.execute(
            select(tasks.c.attempt).where(tasks.c.id == p["task"], lease_held(p["lease"]))
        ).scalar_one_or_none()
        if attempt is None:
            return NOT_HELD
    before = conn.execute(
        select(func.coalesce(func.max(task_logs.c.seq), 0)).where(
            task_logs.c.task_id == p["task"], task_logs.c.attempt == attempt
        )
    ).scalar_one()
    cap, rows = p["cap"], p["rows"]
    values = [
        {"seq": seq, "at": at, "stream": stream, "line": line}
        for seq, (at, stream, line) in enumerate(rows, start=before + 1)
        if seq <= cap
    ]
    if before <= cap < before + len(rows):
        marker = {"seq": cap + 1, "at": p["now"], "stream": MARKER_STREAM, "line": p["marker"]}
        values.append(marker)
    if values:
        conn.execute(
            insert(task_logs), [{"task_id": p["task"], "attempt": attempt, **v} for v in values]
        )
    return Appended(True, attempt, before, len(values))
