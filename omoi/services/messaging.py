"""Agents talking to each other: a durable inbox per agent (a message sent while the receiver
is away waits there) and live delivery through the event log (``message.sent`` events, whose
entity is the receiving agent, on ``GET /api/v1/events/stream?entity_id=<agent>``).

A handoff is a conversation about a task: ``handoff_request`` asks another agent to take it
over; answering ``handoff_accepted`` moves the running task to the accepting agent under a new
lease (the old holder's lease stops working), ``handoff_declined`` leaves it where it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from omoi.domain.enums import AgentStatus, MessageType, TaskStatus
from omoi.domain.events import EventType
from omoi.models import AgentMessage, Database
from omoi.models.types import utcnow
from omoi.services.errors import Conflict, Invalid, NotFound
from omoi.services.records import event_row, record, task_event
from omoi.services.sql import retry_db, tasks

messages = AgentMessage.__table__
agents = AgentMessage.metadata.tables["agents"]


@dataclass(frozen=True)
class Sent:
    message_ids: list[int]
    thread_id: uuid.UUID
    lease_token: uuid.UUID | None = None  # set when an accepted handoff moved a task here


def _recipients(
    conn: Connection,
    to_agent: uuid.UUID | None,
    capability: str | None,
    broadcast: bool,
    sender: uuid.UUID | None,
) -> tuple[list[uuid.UUID], str]:
    if sum([to_agent is not None, capability is not None, broadcast]) != 1:
        raise Invalid("address a message to exactly one of: an agent, a capability, everyone")
    if to_agent is not None:
        if conn.execute(select(agents.c.id).where(agents.c.id == to_agent)).first() is None:
            raise NotFound(f"agent {to_agent} not found", {"agent_id": str(to_agent)})
        return [to_agent], "direct"
    query = select(agents.c.id, agents.c.capabilities).where(agents.c.status != AgentStatus.OFFLINE)
    rows = [
        r
        for r in conn.execute(query)
        if r.id != sender and (broadcast or capability in r.capabilities)
    ]
    return [r.id for r in rows], "broadcast" if broadcast else f"capability:{capability}"


def send(
    db: Database,
    *,
    type: MessageType,
    content: Any,
    sender: uuid.UUID | None = None,
    to_agent: uuid.UUID | None = None,
    capability: str | None = None,
    broadcast: bool = False,
    thread_id: uuid.UUID | None = None,
    task_id: uuid.UUID | None = None,
) -> Sent:
    thread = thread_id or uuid.uuid4()

    def tx() -> Sent:
        now = utcnow()
        with db.connect() as conn:
            lease = None
            if type == MessageType.HANDOFF_ACCEPTED:
                lease = _take_over(conn, task_id, sender)
            elif type == MessageType.HANDOFF_REQUEST and task_id is None:
                raise Invalid("a handoff_request names the task_id it hands off")
            recipients, audience = _recipients(conn, to_agent, capability, broadcast, sender)
            ids = [
                conn.execute(
                    insert(messages)
                    .values(
                        to_agent=r,
                        from_agent=sender,
                        audience=audience,
                        type=type,
                        content=content,
                        thread_id=thread,
                        task_id=task_id,
                        created_at=now,
                    )
                    .returning(messages.c.id)
                ).scalar_one()
                for r in recipients
            ]
            record(
                conn,
                (
                    event_row(
                        EventType.MESSAGE_SENT,
                        "agent",
                        r,
                        None,
                        {
                            "message_id": i,
                            "type": str(type),
                            "from": str(sender),
                            "thread_id": str(thread),
                        },
                        now,
                    )
                    for r, i in zip(recipients, ids, strict=True)
                ),
            )
            return Sent(ids, thread, lease)

    return retry_db(tx)


def _take_over(conn: Connection, task_id: uuid.UUID | None, agent_id: uuid.UUID | None) -> Any:
    """Accepting a handoff: the running task moves to the accepting agent under a new lease."""
    if task_id is None or agent_id is None:
        raise Invalid("handoff_accepted needs the task_id and the accepting agent (from_agent)")
    lease = uuid.uuid4()
    row = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.RUNNING)
        # reported now: its new holder has a heartbeat timeout to name it in its heartbeats
        .values(agent_id=agent_id, lease_token=lease, reported_at=utcnow())
        .returning(tasks.c.ticket_id, tasks.c.attempt)
    ).one_or_none()
    if row is None:
        raise Conflict(
            f"task {task_id} is not running; there is nothing to hand off",
            {"task_id": str(task_id)},
        )
    record(
        conn,
        [
            task_event(
                EventType.TASK_HANDED_OFF,
                task_id,
                row.ticket_id,
                {"attempt": row.attempt, "to_agent": str(agent_id)},
            )
        ],
    )
    return lease


def inbox(
    db: Database,
    agent_id: uuid.UUID,
    *,
    unread_only: bool = False,
    thread_id: uuid.UUID | None = None,
    limit: int = 100,
) -> list[Any]:
    query = select(messages).where(messages.c.to_agent == agent_id).order_by(messages.c.id)
    if unread_only:
        query = query.where(messages.c.read_at.is_(None))
    if thread_id is not None:
        query = query.where(messages.c.thread_id == thread_id)
    with db.connect() as conn:
        if conn.execute(select(agents.c.id).where(agents.c.id == agent_id)).first() is None:
            raise NotFound(f"agent {agent_id} not found", {"agent_id": str(agent_id)})
        return list(conn.execute(query.limit(limit)))


def mark_read(db: Database, agent_id: uuid.UUID, message_ids: list[int]) -> int:
    with db.connect() as conn:
        return conn.execute(
            update(messages)
            .where(
                messages.c.to_agent == agent_id,
                messages.c.id.in_(message_ids),
                messages.c.read_at.is_(None),
            )
            .values(read_at=utcnow())
        ).rowcount
