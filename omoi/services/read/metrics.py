"""What ``/metrics`` reports, read from the record at scrape time (so every API process and
every scrape agree, whichever process did the work)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from omoi.domain.enums import AgentStatus, TaskStatus
from omoi.persistence import Database, GateResult
from omoi.persistence.statements import tasks, tickets
from omoi.persistence.types import utcnow

gate_results = GateResult.__table__
agents = GateResult.metadata.tables["agents"]


@dataclass
class Snapshot:
    tickets: dict[tuple[str, str], int] = field(default_factory=dict)  # (phase, status)
    tasks: dict[str, int] = field(default_factory=dict)
    oldest_queued_seconds: float = 0.0
    oldest_unpublished_seconds: float = 0.0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # category of current errors
    lock_waits: int = 0
    agents: dict[str, int] = field(default_factory=dict)
    overdue_agents: int = 0
    gate_failures: int = 0


def snapshot(db: Database, heartbeat_timeout: float) -> Snapshot:
    now = utcnow()
    snap = Snapshot()
    with db.connect() as conn:
        for phase, status, n in conn.execute(
            select(tickets.c.phase, tickets.c.status, func.count()).group_by(
                tickets.c.phase, tickets.c.status
            )
        ):
            snap.tickets[(phase, status)] = n
        snap.tasks = dict(
            conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status)).all()
        )
        queued = tasks.c.status == TaskStatus.QUEUED
        oldest: Any = conn.execute(select(func.min(tasks.c.queued_at)).where(queued)).scalar()
        unpublished: Any = conn.execute(
            select(func.min(tasks.c.queued_at)).where(
                queued,
                tasks.c.published_at.is_(None),
                tasks.c.external.is_(False),
                tasks.c.waiting_for.is_(None),
            )
        ).scalar()
        snap.oldest_queued_seconds = (now - oldest).total_seconds() if oldest else 0.0
        snap.oldest_unpublished_seconds = (
            (now - unpublished).total_seconds() if unpublished else 0.0
        )
        snap.retries = int(
            conn.execute(select(func.coalesce(func.sum(tasks.c.retry_count), 0))).scalar_one()
        )
        for row in conn.execute(select(tasks.c.error).where(tasks.c.error.is_not(None))):
            if row.error is None:  # a JSON null: what a result or a retry cleared it to
                continue
            category = row.error.get("category", "unknown")
            snap.errors[category] = snap.errors.get(category, 0) + 1
        snap.lock_waits = conn.execute(
            select(func.count()).where(tasks.c.waiting_for.is_not(None))
        ).scalar_one()
        snap.agents = dict(
            conn.execute(select(agents.c.status, func.count()).group_by(agents.c.status)).all()
        )
        cutoff = now - timedelta(seconds=heartbeat_timeout)
        snap.overdue_agents = conn.execute(
            select(func.count()).where(
                agents.c.status.in_([AgentStatus.IDLE, AgentStatus.BUSY]),
                func.coalesce(agents.c.last_heartbeat, agents.c.registered_at) < cutoff,
            )
        ).scalar_one()
        snap.gate_failures = conn.execute(
            select(func.count()).where(gate_results.c.passed.is_(False))
        ).scalar_one()
    return snap
