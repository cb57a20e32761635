"""Retention of finished tickets: beat deletes each ticket that is done or cancelled and whose
last change is older than ``OMOI_TICKET_RETENTION``, with everything that belongs to it.

What goes with a ticket: its tasks (and, by their foreign keys, the tasks' log lines and
resource locks), phase history, artifacts, gate results and approvals (foreign keys ``ON
DELETE CASCADE``), and, having no foreign key, its events and the agents' messages about its
tasks, deleted here. Blocked tickets wait for a person and stay, as do active ones and a
finished ticket with a task still open.

Its last change is the later of ``updated_at`` and its newest event: a late result of a
cancelled task writes an event and changes no ticket. A ticket whose newest event is among
the log's last ``LOOKBACK`` ids waits, whatever its age: a live follower re-reads that
window for late commits by counting its rows (``events._read``), which a deletion there
would upset. Below it, deleted ids are gaps like any other: a cursor (``GET /events?after=``,
an SSE ``Last-Event-ID``) past or before them pages on.

Each batch is one short transaction of its own under the sweep's advisory lock: at most
``RETENTION_TICKETS`` tickets and, past the first ticket, ``RETENTION_TASKS`` tasks, picked
``FOR UPDATE SKIP LOCKED`` in primary-key order. Ticket ids are UUIDv7, so those created
before the cutoff are one range of the primary key, walked from where the previous batch of
the round stopped; nothing live is touched, so claims and results never wait for it.

With ``OMOI_TICKET_ARCHIVE_DIR`` each ticket is first written, with its rows, as one JSON
line to ``tickets-<date>.jsonl`` there, flushed to disk before the deletion commits: a
crash between the two archives the ticket again in the next round (at least once).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete, func, select, text

from omoi.domain.enums import OPEN_TASK_STATUSES, TicketStatus
from omoi.domain.ids import first_id_at
from omoi.persistence import AgentMessage, Approval, Artifact, Database, GateResult, PhaseHistory
from omoi.persistence.statements import events, sweep_lock, tasks, tickets
from omoi.persistence.types import utcnow
from omoi.services.events import LOOKBACK

RETENTION_TICKETS = 100  # tickets one transaction deletes at most
RETENTION_TASKS = 5_000  # their tasks at most (a wider ticket is deleted alone)
RETENTION_BATCHES = 20  # transactions per sweep: what is left waits for the next round
FINISHED = (TicketStatus.DONE, TicketStatus.CANCELLED)
messages = AgentMessage.__table__
# What an archived ticket carries besides its row, in this order; task logs are not kept.
ARCHIVED: dict[str, Table] = {
    "tasks": tasks,
    "events": events,
    "phase_history": PhaseHistory.__table__,
    "artifacts": Artifact.__table__,
    "gate_results": GateResult.__table__,
    "approvals": Approval.__table__,
}


def sweep(
    db: Database,
    retention: float,
    archive_dir: Path | None = None,
    tickets_per_batch: int = RETENTION_TICKETS,
    tasks_per_batch: int = RETENTION_TASKS,
    now: datetime | None = None,
) -> int:
    """Delete finished tickets older than ``retention`` seconds (none when 0) at ``now``
    (the clock's), a batch per transaction, at most ``RETENTION_BATCHES`` a round; returns
    how many went."""
    if retention <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(seconds=retention)
    bound = first_id_at(int(cutoff.timestamp() * 1000))
    after: uuid.UUID | None = None
    deleted = 0
    for _ in range(RETENTION_BATCHES):
        with db.connect() as conn, sweep_lock(conn, "tickets") as got:
            if not got:
                break
            ids, more = _pick(conn, cutoff, bound, after, tickets_per_batch, tasks_per_batch)
            if ids and archive_dir is not None:
                _archive(conn, ids, archive_dir)
            if ids:
                _delete(conn, ids)
        deleted += len(ids)
        if not more:
            break
        after = ids[-1]
    return deleted


def _pick(
    conn: Connection,
    cutoff: datetime,
    bound: uuid.UUID,
    after: uuid.UUID | None,
    count: int,
    task_budget: int,
) -> tuple[list[uuid.UUID], bool]:
    """The next batch's tickets, locked, and whether more may follow. Its tasks are counted
    per ticket and the batch ends before the one that would pass ``task_budget``.

    PostgreSQL's JIT is off for it: the planner, which cannot know how few tickets below the
    bound are kept, costs the walk high enough to compile it, 0.35..0.6 s each time for a
    statement that runs in 7 ms (a million finished tasks, 100 tickets picked)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))
    rows = list(conn.execute(candidates(cutoff, bound, after, count)))
    taken: list[uuid.UUID] = []
    spent = 0
    for row in rows:
        if taken and spent + row.n > task_budget:
            return taken, True
        taken.append(row.id)
        spent += row.n
    return taken, len(rows) == count


def candidates(cutoff: datetime, bound: uuid.UUID, after: uuid.UUID | None, count: int) -> Any:
    """Up to ``count`` tickets that may go, after ``after``, locked (skipping locked ones),
    each with its number of tasks: a walk of the primary key below ``bound`` (the first id
    of the cutoff's millisecond), each ticket's tasks and newest event read by their index."""
    ticket = tickets.c.id
    of_ticket = tasks.c.ticket_id == ticket
    its_events = select(events.c.id).where(events.c.ticket_id == ticket)
    newest_id = its_events.with_only_columns(func.max(events.c.id)).scalar_subquery()
    newest_at = (
        its_events.with_only_columns(events.c.created_at)
        .order_by(events.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    head = select(func.coalesce(func.max(events.c.id), 0)).scalar_subquery()
    counted = select(func.count()).select_from(tasks).where(of_ticket)
    still_open = counted.where(tasks.c.status.in_(OPEN_TASK_STATUSES)).scalar_subquery()
    query = (
        select(ticket, counted.scalar_subquery().label("n"))
        .where(
            ticket < bound,
            tickets.c.status.in_(FINISHED),
            tickets.c.updated_at < cutoff,
            # a scalar count per ticket, by its index: as NOT EXISTS the planner, expecting
            # no open task, made it an anti-join over a scan of every task
            still_open == 0,
            newest_id.is_(None) | ((newest_at < cutoff) & (newest_id <= head - LOOKBACK)),
        )
        .order_by(ticket)
        .limit(count)
        .with_for_update(of=tickets, skip_locked=True)
    )
    return query if after is None else query.where(ticket > after)


def _delete(conn: Connection, ids: list[uuid.UUID]) -> None:
    """The tickets and what has no foreign key to them; the cascades take the rest."""
    their_tasks = select(tasks.c.id).where(tasks.c.ticket_id.in_(ids))
    conn.execute(delete(messages).where(messages.c.task_id.in_(their_tasks)))
    conn.execute(delete(events).where(events.c.ticket_id.in_(ids)))
    conn.execute(delete(tickets).where(tickets.c.id.in_(ids)))


def _archive(conn: Connection, ids: list[uuid.UUID], directory: Path) -> None:
    """One JSON line per ticket, in today's file, on disk before the deletion commits."""
    documents: dict[uuid.UUID, dict[str, Any]] = {}
    for row in conn.execute(select(tickets).where(tickets.c.id.in_(ids)).order_by(tickets.c.id)):
        documents[row.id] = {"ticket": dict(row._mapping), **{name: [] for name in ARCHIVED}}
    for name, table in ARCHIVED.items():
        query = select(table).where(table.c.ticket_id.in_(ids)).order_by(table.c.id)
        for row in conn.execute(query):
            documents[row.ticket_id][name].append(dict(row._mapping))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tickets-{utcnow():%Y-%m-%d}.jsonl"
    with path.open("a", encoding="utf-8") as out:
        out.writelines(
            json.dumps(d, default=_plain, ensure_ascii=False) + "\n" for d in documents.values()
        )
        out.flush()
        os.fsync(out.fileno())


def _plain(value: Any) -> Any:
    """A column value JSON has no type for: a timestamp in ISO 8601, anything else (an id)
    as its text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)
