"""A history of finished work, written by PostgreSQL itself (``INSERT … SELECT`` over
``generate_series``): done tickets of ``per_ticket`` succeeded tasks, each task with its two
events, as old as asked. The benchmark's seeded omoi holds one; the retention test deletes one
beside live work, and ``Sweeping`` runs that sweep during the benchmark's rounds. A million
tasks take well under a minute (no round trip per row).

Ids are UUIDv7 of the rows' own time, as omoi makes them (``omoi.domain.ids``): ordered by
creation, so the retention sweep finds old tickets in one range of the primary key."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Connection, text

from omoi.persistence import Database
from omoi.services import retention

SEED_TITLE = "seeded history"


def uuid7_sql(millis: str, counter: str, tail: str) -> str:
    """SQL for a UUIDv7 of the millisecond ``millis``, 12 bits of ``counter``, and 62 bits
    from the md5 of ``tail`` (each an SQL expression)."""
    return (
        f"(lpad(to_hex(({millis})::bigint), 12, '0') || '7'"
        f" || lpad(to_hex(({counter}) % 4096), 3, '0')"
        f" || '8' || substr(md5({tail}), 1, 15))::uuid"
    )


# Ticket ``i`` (0-based) lives at ``:start + i`` ms; its id is a function of ``i`` alone, so
# the tasks' statement names it without reading it back.
TICKET_MS = ":start + i"
TICKET_ID = uuid7_sql(TICKET_MS, "0", "'seed-ticket-' || i")
TASK_ID = uuid7_sql(TICKET_MS, "k + 1", "'seed-task-' || g")
AT = f"to_timestamp(({TICKET_MS}) / 1000.0)"

TICKETS = text(
    "INSERT INTO tickets (id, title, description, priority, workflow, phase, previous_phase,"
    " status, context, open_tasks, created_at, updated_at)"
    f" SELECT {TICKET_ID}, '{SEED_TITLE}', '', 'MEDIUM', 'dag', 'PHASE_DONE', 'PHASE_RUN',"
    f" 'done', '{{}}', 0, {AT}, {AT} FROM generate_series(0, :tickets - 1) AS i"
)
TASKS_AND_EVENTS = text(
    "WITH work AS ("
    " INSERT INTO tasks (id, ticket_id, phase, key, task_type, description, capabilities, route,"
    " payload, priority, dependencies, unmet_dependencies, status, attempt, retry_count,"
    " max_retries, resources, external, created_at, queued_at, started_at, finished_at,"
    " published_at, result)"
    f" SELECT {TASK_ID}, {TICKET_ID},"
    " 'PHASE_RUN', 'seed' || k, 'noop', '', ARRAY['default'], 'default', '{}', 'MEDIUM',"
    " '{\"depends_on\": []}', 0, 'succeeded', 1, 0, 3, '{}', false,"
    f" {AT}, {AT}, {AT}, {AT}, {AT}, '{{\"ok\": true}}'"
    " FROM generate_series(0, :count - 1) AS g,"
    " LATERAL (SELECT g / :per AS i, g % :per AS k) AS place"
    " RETURNING id, ticket_id, finished_at)"
    " INSERT INTO events (type, entity_type, entity_id, ticket_id, payload, created_at)"
    " SELECT e.type, 'task', w.id, w.ticket_id, '{}', w.finished_at"
    " FROM work w, (VALUES ('task.started'), ('task.succeeded')) AS e(type)"
)


def seed_history(
    conn: Connection, count: int, per_ticket: int = 10, age: float = 30 * 24 * 3600.0
) -> dict[str, Any]:
    """``count`` succeeded tasks in done tickets of ``per_ticket`` (the last may hold fewer),
    the first ticket ``age`` seconds old and each next one a millisecond younger; returns how
    many tickets and the seconds the statements took."""
    tickets = -(-count // per_ticket)
    start = int((time.time() - age) * 1000)
    began = time.perf_counter()
    conn.execute(TICKETS, {"start": start, "tickets": tickets})
    conn.execute(TASKS_AND_EVENTS, {"start": start, "count": count, "per": per_ticket})
    return {"tickets": tickets, "seconds": time.perf_counter() - began}


class Sweeping:
    """The retention sweep as beat runs it, a round every ``interval`` seconds, in a thread
    of its own beside the measured work (``python -m benchmarks --retention``); the seeded
    history is a month old and the retention a day, so every round finds a full load."""

    def __init__(self, db: Database, interval: float = 5.0, retention: float = 24 * 3600.0):
        self.db = db
        self.interval = interval
        self.retention = retention
        self.rounds: list[tuple[int, float]] = []  # (tickets deleted, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-retention", daemon=True)

    def __enter__(self) -> Sweeping:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            gone = retention.sweep(self.db, self.retention)
            spent = time.perf_counter() - began
            self.rounds.append((gone, spent))
            self._stop.wait(max(0.0, self.interval - spent))

    def summary(self) -> str:
        deleted = sum(g for g, _ in self.rounds)
        busy = sorted(s for g, s in self.rounds if g)
        if not busy:
            return f"{len(self.rounds)} rounds, nothing deleted"
        return (
            f"{deleted:,} tickets deleted in {len(busy)} of {len(self.rounds)} rounds"
            f" (a round {busy[len(busy) // 2]:.2f} s median, {busy[-1]:.2f} s longest)"
        )
