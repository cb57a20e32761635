"""The DAG's counters against the rows they count, checked after every test that used a
database. Each holds at every commit, not only once work has settled: every transaction that
moves a task moves its counters with it, so a failure here is a race or a missed transition,
whatever the test was doing when it ended."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from omoi.domain.enums import TERMINAL_TASK_STATUSES, TaskStatus
from omoi.persistence import Database
from omoi.persistence.statements import tasks, tickets

LOST = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def violations(db: Database, since: datetime | None = None) -> list[str]:
    """Every broken invariant among the tickets created or changed since ``since`` (all when
    None), one line each."""
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot while workers still commit
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            query = select(tickets.c.id, tickets.c.open_tasks, tickets.c.status)
            if since is not None:
                query = query.where(
                    or_(tickets.c.created_at >= since, tickets.c.updated_at >= since)
                )
            ticket_rows = {t.id: t for t in conn.execute(query)}
            rows = list(
                conn.execute(
                    select(
                        tasks.c.id,
                        tasks.c.ticket_id,
                        tasks.c.key,
                        tasks.c.status,
                        tasks.c.dependencies,
                        tasks.c.unmet_dependencies,
                        tasks.c.sync_need,
                    ).where(tasks.c.ticket_id.in_(list(ticket_rows)))
                )
            )
    return _check(ticket_rows, rows)


def _check(ticket_rows: dict[uuid.UUID, Any], rows: list[Any]) -> list[str]:
    status = {r.id: r.status for r in rows}
    open_count: dict[uuid.UUID, int] = defaultdict(int)
    found = []
    for r in rows:
        if r.status not in TERMINAL_TASK_STATUSES:
            open_count[r.ticket_id] += 1
        if r.status != TaskStatus.PENDING:
            continue
        deps = [status.get(uuid.UUID(d)) for d in r.dependencies.get("depends_on", [])]
        need = r.sync_need if r.sync_need is not None else len(deps)
        succeeded = sum(s == TaskStatus.SUCCEEDED for s in deps)
        lost = sum(s in LOST for s in deps)
        where = f"ticket {r.ticket_id} task {r.key}"
        if r.unmet_dependencies != need - succeeded:
            found.append(
                f"{where}: unmet_dependencies {r.unmet_dependencies}, "
                f"but {need - succeeded} of its {need} needed dependencies have not succeeded"
            )
        if r.unmet_dependencies <= 0:
            found.append(f"{where}: pending with no unmet dependency; it should be queued")
        if len(deps) - lost < need:
            found.append(f"{where}: pending, but only {len(deps) - lost} of {need} can succeed")
    for ticket_id, t in ticket_rows.items():
        if t.open_tasks != open_count[ticket_id]:
            found.append(
                f"ticket {ticket_id} ({t.status}): open_tasks {t.open_tasks}, "
                f"but {open_count[ticket_id]} of its tasks are not finished"
            )
    return found
