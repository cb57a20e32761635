"""What /metrics reports, read from the record: tickets by phase and status, tasks by status,
how long the oldest queued and unpublished tasks have waited, retries, current errors by
category, lock waits, agents and the overdue ones, failed gates."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from omoi.domain.enums import AgentKind, ErrorCategory
from omoi.persistence.statements import agents
from omoi.persistence.types import utcnow
from omoi.services import agents as fleet
from omoi.services.phases import NewTask
from omoi.services.read.metrics import snapshot
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import change, fail, finish, submit, tasks_of
from tests.support.units import Recorded


def test_an_empty_record_reports_zeros(uow: UnitOfWork) -> None:
    snap = snapshot(uow.db, heartbeat_timeout=5)
    assert (snap.tickets, snap.tasks, snap.oldest_queued_seconds, snap.retries) == ({}, {}, 0, 0)


def test_the_snapshot_counts_what_the_record_holds(uow: UnitOfWork, dispatcher: Recorded) -> None:
    dispatcher.down = True  # what is submitted now stays unpublished
    made = submit(
        uow, NewTask("a", "ok"), NewTask("b", "ok"), NewTask("c", "ok"), NewTask("d", "ok")
    )
    dispatcher.down = False
    blocked = submit(uow, workflow="gated").ticket_id
    finish(uow, tasks_of(uow.db, blocked)["draft"].id)  # no spec: the gate fails
    rows = tasks_of(uow.db, made.ticket_id)
    fail(uow, rows["a"].id, ErrorCategory.TRANSIENT)
    fail(uow, rows["b"].id, ErrorCategory.PERMANENT)
    change(uow.db, rows["c"].id, waiting_for="repo", queued_at=utcnow() - timedelta(seconds=30))
    change(uow.db, rows["d"].id, queued_at=utcnow() - timedelta(seconds=20))
    fleet.register(uow.db, name="ok", kind=AgentKind.CELERY, capabilities=[])
    late = fleet.register(uow.db, name="late", kind=AgentKind.CELERY, capabilities=[])
    with uow.db.connect() as conn:
        conn.execute(
            update(agents)
            .where(agents.c.id == late)
            .values(last_heartbeat=utcnow() - timedelta(seconds=60))
        )
    snap = snapshot(uow.db, heartbeat_timeout=5)
    assert snap.tickets == {("PHASE_RUN", "active"): 1, ("PHASE_BLOCKED", "blocked"): 1}
    assert snap.tasks == {"retrying": 1, "failed": 1, "queued": 2, "succeeded": 1}
    assert 30 <= snap.oldest_queued_seconds < 40  # c, parked on its lock, still waits
    assert 20 <= snap.oldest_unpublished_seconds < 30  # d: a parked task is not unpublished
    assert (snap.retries, snap.errors) == (1, {"transient": 1, "permanent": 1})
    assert (snap.lock_waits, snap.agents, snap.overdue_agents) == (1, {"idle": 2}, 1)
    assert snap.gate_failures == 1
