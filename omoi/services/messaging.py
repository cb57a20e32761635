"""Agents talking to each other: a durable inbox per agent (a message sent while the receiver
is away waits there) and live delivery through the event log (``message.sent`` events, whose
entity is the receiving agent, on ``GET /api/v1/events/stream?entity_id=<agent>``).

A handoff is a conversation about a running task. Only the task's holder may send a
``handoff_request`` (naming the task); each recipient's copy of it is **pending** while

- its recipient has not answered it (``handoff_accepted`` / ``handoff_declined`` in its thread),
- the task is still running the attempt it was sent in, under the agent that sent it, and
- the task has not moved to another holder since (a takeover closes every open request).

An answer is refused (nothing written) unless it replies, in the request's thread and directly
to the requester, to a copy pending in the answering agent's inbox. Accepting also needs the
answering agent's capabilities to cover the task's; it moves the task to that agent under a new
lease (the old holder's lease stops working). Declining leaves the task where it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from omoi.domain.enums import AgentStatus, MessageType, TaskStatus
from omoi.domain.events import EventType
from omoi.persistence import AgentMessage, Database
from omoi.persistence.statements import event_row, record, task_event, tasks
from omoi.persistence.types import utcnow
from omoi.services.errors import Conflict, Forbidden, Invalid, NotFound

messages = AgentMessage.__table__
agents = AgentMessage.metadata.tables["agents"]

ANSWERS = (MessageType.HANDOFF_ACCEPTED, MessageType.HANDOFF_DECLINED)


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
            lease = attempt = None
            if type == MessageType.HANDOFF_REQUEST:
                attempt = _held_attempt(conn, task_id, sender)
            elif type in ANSWERS:
                lease = _answer(conn, type, task_id, sender, to_agent, thread_id)
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
                        attempt=attempt,
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

    return db.retry(tx)


def _running(conn: Connection, task_id: uuid.UUID) -> Any:
    """The running task, its row locked until commit: a handoff decided on it stays true."""
    row = conn.execute(
        select(
            tasks.c.ticket_id,
            tasks.c.status,
            tasks.c.agent_id,
            tasks.c.attempt,
            tasks.c.capabilities,
        )
        .where(tasks.c.id == task_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
    if row.status != TaskStatus.RUNNING:
        raise Conflict(
            f"task {task_id} is {row.status}, not running; there is nothing to hand off",
            {"task_id": str(task_id), "status": str(row.status)},
            code="task_not_running",
        )
    return row


def _held_attempt(conn: Connection, task_id: uuid.UUID | None, sender: uuid.UUID | None) -> int:
    """A handoff_request comes from the running task's holder; the attempt it holds."""
    if task_id is None or sender is None:
        raise Invalid(
            "a handoff_request names the task_id it hands off and its holder (from_agent)"
        )
    task = _running(conn, task_id)
    if task.agent_id != sender:
        raise Forbidden(
            f"agent {sender} does not hold task {task_id}; only its holder may hand it off",
            {"task_id": str(task_id)},
            code="not_task_holder",
        )
    return int(task.attempt)


def _answer(
    conn: Connection,
    type: MessageType,
    task_id: uuid.UUID | None,
    sender: uuid.UUID | None,
    to_agent: uuid.UUID | None,
    thread_id: uuid.UUID | None,
) -> uuid.UUID | None:
    """Answer the sender's pending copy of a handoff_request; the new lease when accepted."""
    if task_id is None or sender is None or thread_id is None or to_agent is None:
        raise Invalid(
            f"{type} answers a handoff_request: it names the task_id, the answering agent"
            " (from_agent), the request's thread_id, and goes to the agent that asked"
        )
    task = _running(conn, task_id)
    request = conn.execute(
        select(messages.c.id)
        .where(
            messages.c.type == MessageType.HANDOFF_REQUEST,
            messages.c.task_id == task_id,
            messages.c.thread_id == thread_id,
            messages.c.to_agent == sender,
            messages.c.from_agent == task.agent_id,
            messages.c.from_agent == to_agent,
            messages.c.attempt == task.attempt,
            messages.c.answered_at.is_(None),
        )
        .order_by(messages.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if request is None:
        raise Conflict(
            f"agent {sender} has no pending handoff_request for task {task_id} in thread"
            f" {thread_id} from the task's holder {task.agent_id}",
            {"task_id": str(task_id), "thread_id": str(thread_id)},
            code="no_pending_handoff",
        )
    now = utcnow()
    if type == MessageType.HANDOFF_DECLINED:
        conn.execute(update(messages).where(messages.c.id == request).values(answered_at=now))
        return None
    _check_covers(conn, sender, task)
    lease = uuid.uuid4()
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id)
        # reported now: its new holder has a heartbeat timeout to name it in its heartbeats
        .values(agent_id=sender, lease_token=lease, reported_at=now)
    )
    # answered, and with a new holder nothing asked under the old holding is pending any more
    conn.execute(
        update(messages)
        .where(
            messages.c.task_id == task_id,
            messages.c.type == MessageType.HANDOFF_REQUEST,
            messages.c.answered_at.is_(None),
        )
        .values(answered_at=now)
    )
    record(
        conn,
        [
            task_event(
                EventType.TASK_HANDED_OFF,
                task_id,
                task.ticket_id,
                {
                    "attempt": task.attempt,
                    "from_agent": str(task.agent_id),
                    "to_agent": str(sender),
                },
            )
        ],
    )
    return lease


def _check_covers(conn: Connection, agent_id: uuid.UUID, task: Any) -> None:
    """Only a live agent with every capability the task needs may take it over."""
    agent = conn.execute(
        select(agents.c.capabilities, agents.c.status).where(agents.c.id == agent_id)
    ).one_or_none()
    if agent is None:
        raise NotFound(f"agent {agent_id} not found", {"agent_id": str(agent_id)})
    if agent.status == AgentStatus.OFFLINE:
        raise Conflict(
            f"agent {agent_id} is offline; register again",
            {"agent_id": str(agent_id)},
            code="agent_offline",
        )
    missing = sorted(set(task.capabilities) - set(agent.capabilities))
    if missing:
        raise Forbidden(
            f"agent {agent_id} lacks capabilities the task needs: {', '.join(missing)}",
            {"agent_id": str(agent_id), "missing": missing},
            code="capabilities_do_not_cover_task",
        )


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
