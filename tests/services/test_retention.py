"""Retention of finished tickets: what the sweep selects (done or cancelled, unchanged for the
retention, no task open, no recent event), that a ticket goes with every row of it, in
batches, archived first when asked, and that an events cursor pages on past what went.

PostgreSQL's share (the advisory lock, ``SKIP LOCKED`` beside live work on real workers) is
in tests/integration/test_retention.py. The sweep is run "later" (``now``): ticket ids are
time-ordered, so only a ticket created before the cutoff can be chosen."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from omoi import beat
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.enums import AgentKind, MessageType, TicketStatus
from omoi.domain.ids import first_id_at, new_id
from omoi.persistence import (
    Agent,
    AgentMessage,
    Approval,
    Artifact,
    Database,
    GateResult,
    PhaseHistory,
    Resource,
    ResourceLock,
    TaskLog,
)
from omoi.persistence.statements import events, tasks, tickets
from omoi.persistence.types import utcnow
from omoi.services import retention
from omoi.services.cancellation import cancel_ticket
from omoi.services.events import LOOKBACK, list_events
from omoi.services.phases import NewTask
from omoi.services.unit_of_work import UnitOfWork
from tests.services.steps import finish, submit, tasks_of

DAY = 24 * 3600.0
# Every table a ticket's rows live in, and how a row names its ticket (directly or by task)
BY_TICKET = [PhaseHistory, Artifact, GateResult, Approval]
BY_TASK = [TaskLog, ResourceLock, AgentMessage]


def later(days: float = 2) -> datetime:
    """When the sweep runs in these tests: ``days`` from now."""
    return utcnow() + timedelta(days=days)


def fill_log(db: Database, count: int = LOOKBACK) -> None:
    """``count`` events of no ticket: the log's newest ``LOOKBACK`` ids, which a live follower
    re-reads, are past every ticket's own."""
    with db.connect() as conn:
        conn.execute(
            insert(events),
            [{"type": "agent.registered", "entity_type": "agent", "payload": {}}] * count,
        )


def done(uow: UnitOfWork, *keys: str) -> uuid.UUID:
    """A finished ``dag`` ticket of independent tasks."""
    ticket = submit(uow, *(NewTask(k, "ok") for k in keys or ("a",))).ticket_id
    for row in tasks_of(uow.db, ticket).values():
        finish(uow, row.id)
    return ticket


def touch(db: Database, ticket_id: uuid.UUID, at: datetime) -> None:
    with db.connect() as conn:
        conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(updated_at=at))


def exists(db: Database, ticket_id: uuid.UUID) -> bool:
    with db.connect() as conn:
        return (
            conn.execute(select(tickets.c.id).where(tickets.c.id == ticket_id)).first() is not None
        )


def with_every_row(uow: UnitOfWork, ticket_id: uuid.UUID) -> None:
    """Give the ticket a row in every table that holds a ticket's rows."""
    task_id = next(iter(tasks_of(uow.db, ticket_id).values())).id
    agent = new_id()
    with uow.db.connect() as conn:
        conn.execute(insert(Agent.__table__).values(id=agent, name="a", kind=AgentKind.EXTERNAL))
        conn.execute(insert(Resource.__table__).values(name=f"r-{ticket_id}", fencing=1))
        for table, row in (
            (Artifact, {"phase": "PHASE_RUN", "type": "report", "content": {"ok": 1}}),
            (GateResult, {"phase": "PHASE_RUN", "passed": True}),
            (Approval, {"phase": "PHASE_RUN", "by": "ops"}),
        ):
            conn.execute(insert(table.__table__).values(ticket_id=ticket_id, **row))
        conn.execute(
            insert(TaskLog.__table__).values(
                task_id=task_id, attempt=1, seq=1, at=utcnow(), stream="log", line="hi"
            )
        )
        conn.execute(
            insert(ResourceLock.__table__).values(
                name=f"r-{ticket_id}", mode="shared", holder_task=task_id, fencing=1
            )
        )
        conn.execute(
            insert(AgentMessage.__table__).values(
                to_agent=agent,
                audience="direct",
                type=MessageType.INFO,
                content="about it",
                thread_id=uuid.uuid4(),
                task_id=task_id,
            )
        )


def rows_of(db: Database, ticket_id: uuid.UUID) -> dict[str, int]:
    """How many rows of the ticket each table holds."""
    with db.connect() as conn:
        task_ids = select(tasks.c.id).where(tasks.c.ticket_id == ticket_id)
        counts = {
            "tasks": select(func.count()).where(tasks.c.ticket_id == ticket_id),
            "events": select(func.count()).where(events.c.ticket_id == ticket_id),
        }
        for model in BY_TICKET:
            t = model.__table__
            counts[t.name] = select(func.count()).select_from(t).where(t.c.ticket_id == ticket_id)
        for model, column in zip(BY_TASK, ("task_id", "holder_task", "task_id"), strict=True):
            t = model.__table__
            counts[t.name] = select(func.count()).select_from(t).where(t.c[column].in_(task_ids))
        return {name: conn.execute(q).scalar_one() for name, q in counts.items()}


def test_an_old_finished_ticket_goes_with_every_row_of_it_and_a_recent_one_stays(
    uow: UnitOfWork,
) -> None:
    old, recent = done(uow, "a", "b"), done(uow)
    for ticket in (old, recent):
        with_every_row(uow, ticket)
    fill_log(uow.db)
    touch(uow.db, recent, later(1.5))  # a day and a half on, the recent one changed
    before = rows_of(uow.db, recent)
    assert all(before.values()), before

    assert retention.sweep(uow.db, DAY, now=later()) == 1
    assert not exists(uow.db, old)
    assert set(rows_of(uow.db, old).values()) == {0}
    assert exists(uow.db, recent) and rows_of(uow.db, recent) == before
    assert retention.sweep(uow.db, DAY, now=later()) == 0


def test_a_cancelled_ticket_goes_and_active_or_blocked_ones_stay(uow: UnitOfWork) -> None:
    cancelled = submit(uow, NewTask("a", "ok")).ticket_id
    cancel_ticket(uow, cancelled, "no longer wanted")
    active = submit(uow, NewTask("a", "ok")).ticket_id
    blocked = done(uow)
    with uow.db.connect() as conn:  # waiting for a person, as a failed gate leaves it
        conn.execute(
            update(tickets).where(tickets.c.id == blocked).values(status=TicketStatus.BLOCKED)
        )
    fill_log(uow.db)

    assert retention.sweep(uow.db, DAY, now=later()) == 1
    assert not exists(uow.db, cancelled)
    assert exists(uow.db, active) and exists(uow.db, blocked)


def test_a_finished_ticket_with_a_task_still_open_is_never_deleted(uow: UnitOfWork) -> None:
    ticket = done(uow, "a", "b")
    running = tasks_of(uow.db, ticket)["b"].id
    with uow.db.connect() as conn:  # an attempt still under way, as a ticket may disagree
        conn.execute(update(tasks).where(tasks.c.id == running).values(status="running"))
    fill_log(uow.db)
    assert retention.sweep(uow.db, DAY, now=later(30)) == 0
    assert exists(uow.db, ticket)
    with uow.db.connect() as conn:
        conn.execute(update(tasks).where(tasks.c.id == running).values(status="succeeded"))
    assert retention.sweep(uow.db, DAY, now=later(30)) == 1


def test_a_recent_event_keeps_an_old_ticket(uow: UnitOfWork) -> None:
    """A late result of a cancelled task writes an event and changes no ticket: that is a
    change too. And so, whatever the clock says, is an event among the log's newest
    ``LOOKBACK``, which live followers still re-read."""
    ticket = done(uow)
    assert retention.sweep(uow.db, DAY, now=later()) == 0  # its events are the log's newest
    fill_log(uow.db)
    with uow.db.connect() as conn:
        conn.execute(
            insert(events).values(
                type="task.superseded",
                entity_type="task",
                ticket_id=ticket,
                payload={},
                created_at=later(1.5),
            )
        )
    fill_log(uow.db)
    assert retention.sweep(uow.db, DAY, now=later()) == 0
    assert retention.sweep(uow.db, DAY, now=later(3)) == 1


def test_no_retention_keeps_everything(uow: UnitOfWork) -> None:
    ticket = done(uow)
    fill_log(uow.db)
    assert retention.sweep(uow.db, 0, now=later(3650)) == 0
    assert exists(uow.db, ticket)


def test_batches_hold_a_few_tickets_and_tasks_and_a_wide_ticket_goes_alone(
    uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = [done(uow) for _ in range(5)]
    wide = done(uow, *(f"w{i}" for i in range(4)))
    fill_log(uow.db)
    picked: list[list[uuid.UUID]] = []
    delete = retention._delete

    def recorded(conn: Any, ids: list[uuid.UUID]) -> None:
        picked.append(list(ids))
        delete(conn, ids)

    monkeypatch.setattr(retention, "_delete", recorded)
    gone = retention.sweep(uow.db, DAY, now=later(), tickets_per_batch=2, tasks_per_batch=3)
    assert gone == 6
    assert picked == [small[0:2], small[2:4], [small[4]], [wide]]
    assert not any(exists(uow.db, t) for t in [*small, wide])


def test_a_round_stops_after_its_batches_and_the_next_goes_on(uow: UnitOfWork) -> None:
    made = [done(uow) for _ in range(retention.RETENTION_BATCHES + 1)]
    fill_log(uow.db)
    assert retention.sweep(uow.db, DAY, now=later(), tickets_per_batch=1) == len(made) - 1
    assert retention.sweep(uow.db, DAY, now=later(), tickets_per_batch=1) == 1


def test_an_archive_holds_each_deleted_ticket_with_its_rows(
    uow: UnitOfWork, tmp_path: Path
) -> None:
    ticket = done(uow, "a", "b")
    with_every_row(uow, ticket)
    fill_log(uow.db)
    counts = rows_of(uow.db, ticket)
    archive = tmp_path / "archive"
    assert retention.sweep(uow.db, DAY, archive, now=later()) == 1
    (path,) = archive.iterdir()
    assert path.name == f"tickets-{utcnow():%Y-%m-%d}.jsonl"
    (line,) = path.read_text().splitlines()
    document = json.loads(line)
    assert document["ticket"]["id"] == str(ticket)
    assert document["ticket"]["status"] == "done"
    assert sorted(t["key"] for t in document["tasks"]) == ["a", "b"]
    for name in ("tasks", "events", "phase_history", "artifacts", "gate_results", "approvals"):
        assert len(document[name]) == counts[name] > 0, name
    assert document["events"][0]["created_at"].endswith("+00:00")


def test_an_events_cursor_pages_on_past_deleted_events(uow: UnitOfWork) -> None:
    first = done(uow)
    with uow.db.connect() as conn:
        before = conn.execute(select(func.min(events.c.id))).scalar_one() - 1
    second = done(uow)
    fill_log(uow.db)
    touch(uow.db, second, later(1.5))
    page, _ = list_events(uow.db, after=before, ticket_id=second)
    kept = [e.id for e in page]
    assert retention.sweep(uow.db, DAY, now=later()) == 1
    assert not exists(uow.db, first)
    page, cursor = list_events(uow.db, after=before, limit=2)
    assert all(e.ticket_id != first for e in page)
    assert [e.id for e in list_events(uow.db, after=before, ticket_id=second)[0]] == kept
    assert cursor is not None and list_events(uow.db, after=cursor)[0]


def test_the_id_bound_is_below_every_later_id() -> None:
    now = utcnow()
    bound = first_id_at(int(now.timestamp() * 1000))
    assert first_id_at(int((now - timedelta(seconds=1)).timestamp() * 1000)) < bound <= new_id()


def test_beat_runs_the_sweep_with_the_setting(uow: UnitOfWork, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "OMOI_DATABASE_URL": uow.db.url,
            "OMOI_DATA_DIR": str(tmp_path),
            "OMOI_TICKET_RETENTION": "3600",
            "OMOI_TICKET_ARCHIVE_DIR": str(tmp_path / "a"),
        }
    )
    assert settings.ticket_retention == 3600 and settings.ticket_archive == tmp_path / "a"
    assert Settings.from_env({"OMOI_DATA_DIR": str(tmp_path)}).ticket_retention == 0
    with pytest.raises(ValueError, match="OMOI_TICKET_RETENTION"):
        Settings.from_env({"OMOI_DATA_DIR": str(tmp_path), "OMOI_TICKET_RETENTION": "-1"})
    assert "tickets" in beat.sweeps(Root(settings, Role.BEAT, db=uow.db))
