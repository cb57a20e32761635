"""Typed SQLAlchemy 2 models. Postgres is the record; every state lives in these rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from omoi.domain.enums import (
    PHASE_NAME_LENGTH,
    PHASE_NAME_PATTERN,
    AgentKind,
    AgentStatus,
    MessageType,
    Priority,
    TaskStatus,
    TicketStatus,
)
from omoi.domain.ids import new_id
from omoi.persistence.types import JsonDoc, TextList, UTCDateTime, utcnow


def one_of(column: str, enum: type[StrEnum], name: str) -> CheckConstraint:
    values = ", ".join(f"'{v}'" for v in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name)


def phase_named(column: str, name: str) -> tuple[CheckConstraint, CheckConstraint]:
    """``column`` holds a phase name (or NULL): PostgreSQL checks the pattern itself; SQLite,
    which has no regular expressions of its own, the same rule in GLOBs. Which phases a
    workflow has is the workflow registry's to check (omoi/services/workflows.py)."""
    glob = (
        f"{column} GLOB '[A-Z]*' AND {column} NOT GLOB '*[^A-Z0-9_]*'"
        f" AND length({column}) <= {PHASE_NAME_LENGTH}"
    )
    return (
        CheckConstraint(f"{column} ~ '{PHASE_NAME_PATTERN}'", name=name).ddl_if(
            dialect="postgresql"
        ),
        CheckConstraint(glob, name=name).ddl_if(dialect="sqlite"),
    )


def partial(where: str) -> dict[str, Any]:
    return {"postgresql_where": text(where), "sqlite_where": text(where)}


# Claim order: priority first (CRITICAL before LOW), then age. The claim query orders by this
# very text, so PostgreSQL matches it to the expression index (migration 0003 spells it out).
PRIORITY_RANK = text(
    "(CASE priority " + " ".join(f"WHEN '{p.value}' THEN {p.rank}" for p in Priority) + " END)"
)


def serial_id() -> Any:
    """A sequence-numbered primary key (BIGINT; SQLite autoincrements only INTEGER ones)."""
    return mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        one_of("priority", Priority, "ck_tickets_priority"),
        *phase_named("phase", "ck_tickets_phase"),
        *phase_named("previous_phase", "ck_tickets_previous_phase"),
        one_of("status", TicketStatus, "ck_tickets_status"),
        Index("ix_tickets_status_phase", "status", "phase"),
        # An Idempotency-Key is scoped to the token that sent it (migration 0015); tickets
        # from before, or submitted without a token, share the one unscoped namespace.
        Index(
            "uq_tickets_token_idempotency_key",
            "submitter_token_id",
            "idempotency_key",
            unique=True,
            **partial("idempotency_key IS NOT NULL AND submitter_token_id IS NOT NULL"),
        ),
        Index(
            "uq_tickets_idempotency_key_unscoped",
            "idempotency_key",
            unique=True,
            **partial("idempotency_key IS NOT NULL AND submitter_token_id IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[str] = mapped_column(String(16), default=Priority.MEDIUM)
    workflow: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    previous_phase: Mapped[str | None] = mapped_column(String(PHASE_NAME_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default=TicketStatus.ACTIVE)
    context: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # The tasks submitted for each phase ({phase: [spec]}), instantiated at every entry into
    # it. Apart from the context, which every external claim carries; read only on entry.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, deferred=True)
    # Tasks of the current phase not yet terminal; maintained in the transactions that end
    # tasks, so the one that brings it to 0 settles the phase without racing its siblings.
    open_tasks: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # The API token that submitted the ticket (no foreign key: revoking a token keeps its
    # history); the scope of its idempotency key.
    submitter_token_id: Mapped[uuid.UUID | None]
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The Celery id of its first job: every job of the ticket names it as its root, so Flower
    # links them (migration 0019; null until a first task is published to Celery).
    root_job: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# A ticket's columns but its plan, which only entering a phase reads (it may be megabytes).
TICKET_COLUMNS = tuple(c for c in Ticket.__table__.c if c.name != "plan")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        one_of("status", TaskStatus, "ck_tasks_status"),
        one_of("priority", Priority, "ck_tasks_priority"),
        *phase_named("phase", "ck_tasks_phase"),
        Index("uq_tasks_ticket_key", "ticket_id", "key", unique=True),
        # Partial indexes: a task's two updates per attempt leave them untouched, and each
        # holds only the rows its query looks for (dependents waiting; retries due).
        # PostgreSQL finds dependents by ix_tasks_dependencies alone (see statements.dependents).
        Index("ix_tasks_pending", "ticket_id", **partial("status = 'pending'")).ddl_if(
            dialect="sqlite"
        ),
        Index("ix_tasks_retrying", "next_attempt_at", **partial("status = 'retrying'")),
        # ix_tasks_agent, over running attempts, follows the class (RUNNING_ATTEMPTS).
        Index("ix_tasks_waiting", "waiting_for", **partial("waiting_for IS NOT NULL")),
        Index(
            "ix_tasks_sync_deadline",
            "sync_deadline",
            **partial("status = 'pending' AND sync_deadline IS NOT NULL"),
        ),
        # The only index over queued tasks (claims, the outbox, metrics): with a second one
        # the planner, on statistics taken when few were queued, sorted them all per claim.
        # An external claim probes each (external, route) it may take in claim order.
        Index(
            "ix_tasks_claimable",
            "external",
            "route",
            PRIORITY_RANK,
            "queued_at",
            **partial("status = 'queued'"),
        ),
        # Dependents are looked up among pending tasks only; a partial GIN index is not
        # touched by a task's claim and result updates (a full one would be, twice a task).
        Index(
            "ix_tasks_dependencies",
            "dependencies",
            postgresql_using="gin",
            postgresql_ops={"dependencies": "jsonb_path_ops"},
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    key: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    capabilities: Mapped[list[str]] = mapped_column(TextList, default=list)
    # The capability that picks its queue: the first, or ``default`` (``routing.route_of``).
    route: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.MEDIUM)
    dependencies: Mapped[dict[str, list[str]]] = mapped_column(
        JsonDoc, default=lambda: {"depends_on": []}
    )
    unmet_dependencies: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    retry_backoff: Mapped[float | None]  # seconds before the first retry; doubles each time
    retry_backoff_max: Mapped[float | None]  # the longest wait between attempts
    timeout_seconds: Mapped[float | None]
    resources: Mapped[list[str]] = mapped_column(TextList, default=list)
    # Only external agents claim it (over HTTP); omoi never publishes it to Celery.
    external: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The resource a queued task waits for; it is published again when that lock is released.
    waiting_for: Mapped[str | None] = mapped_column(String(200))
    # A sync point: ready once ``sync_need`` of its dependencies succeeded; fails at the deadline.
    sync_need: Mapped[int | None]
    sync_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[uuid.UUID | None]
    agent_id: Mapped[uuid.UUID | None]
    celery_id: Mapped[str | None] = mapped_column(String(80))
    # The Celery id of the job upstream of it: the dependency's attempt whose success released
    # it, or the attempt that split it into subtasks. Its jobs name it as their parent.
    parent_job: Mapped[str | None] = mapped_column(String(80))
    result: Mapped[Any | None] = mapped_column(JsonDoc)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last heartbeat in which the running attempt's agent said it was still running it.
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def depends_on(self) -> list[str]:
        return list(self.dependencies.get("depends_on", []))


# Running attempts as the sweeps and counts read them, and the predicate of their index, by
# agent (the lost-agent and deadline sweeps read only these). Every running task has a
# started_at; the term is for the planner: only reads that state it may use the index, so a
# statement about one task (by id, status and lease) takes the primary key. Before, on
# statistics from a moment with nothing running, the planner chose the small-looking partial
# index for those and walked every running task (migration 0012).
RUNNING_ATTEMPTS = and_(
    Task.__table__.c.status == TaskStatus.RUNNING, Task.__table__.c.started_at.is_not(None)
)
Index(
    "ix_tasks_agent",
    Task.__table__.c.agent_id,
    postgresql_where=RUNNING_ATTEMPTS,
    sqlite_where=RUNNING_ATTEMPTS,
)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        one_of("kind", AgentKind, "ck_agents_kind"),
        one_of("status", AgentStatus, "ck_agents_status"),
        Index("ix_agents_status", "status", "kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    capabilities: Mapped[list[str]] = mapped_column(TextList, default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=AgentStatus.IDLE)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Its heartbeats say which tasks it runs (every Celery worker; external agents may): a
    # running attempt it stops reporting is recovered as lost even while it is alive.
    reports_running: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The exec task types (shell, http, operator-marked) a Celery worker's operator enabled on
    # it: a queued task of such a type waits until a live worker has enabled its type.
    enabled_task_types: Mapped[list[str]] = mapped_column(TextList, default=list)


class Event(Base):
    """Append-only log: every state change writes one."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_ticket_id", "ticket_id", "id"),
        Index("ix_events_entity", "entity_id", "id"),
        # ``?actor=``: only events made by a request are indexed, not the workers' hot path
        Index(
            "ix_events_actor_token", "actor_token_id", "id", **partial("actor_token_id IS NOT NULL")
        ),
        Index("ix_events_actor_name", "actor_name", "id", **partial("actor_name IS NOT NULL")),
    )

    id: Mapped[int] = serial_id()
    type: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[uuid.UUID | None]
    ticket_id: Mapped[uuid.UUID | None]
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The API token whose request made the change, and its name then (no foreign key: the
    # log outlives revoked tokens). Null for workers' and beat's own changes.
    actor_token_id: Mapped[uuid.UUID | None]
    actor_name: Mapped[str | None] = mapped_column(String(200))


class PhaseHistory(Base):
    __tablename__ = "phase_history"
    __table_args__ = (Index("ix_phase_history_ticket", "ticket_id", "id"),)

    id: Mapped[int] = serial_id()
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    from_phase: Mapped[str | None] = mapped_column(String(PHASE_NAME_LENGTH))
    to_phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    reason: Mapped[str] = mapped_column(Text, default="")
    by: Mapped[str] = mapped_column(String(200), default="system")  # a token's name, or "gate"
    # a name the client gave as ``by`` (migration 0015)
    note: Mapped[str | None] = mapped_column(String(200))
    artifacts: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Artifact(Base):
    """Something a phase produced: a document, a report, code. Gates judge these."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_ticket_phase", "ticket_id", "phase", "id"),)

    id: Mapped[int] = serial_id()
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    type: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    content: Mapped[Any] = mapped_column(JsonDoc)
    task_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GateResult(Base):
    __tablename__ = "gate_results"
    __table_args__ = (Index("ix_gate_results_ticket", "ticket_id", "id"),)

    id: Mapped[int] = serial_id()
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    passed: Mapped[bool] = mapped_column(Boolean)
    missing: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    reasons: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_ticket_phase", "ticket_id", "phase"),)

    id: Mapped[int] = serial_id()
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(PHASE_NAME_LENGTH))
    by: Mapped[str] = mapped_column(String(200))  # the approving token's name
    # a name the client gave as ``by``: what it says, not who approved (migration 0015)
    note: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentMessage(Base):
    """One message in one agent's durable inbox (a broadcast is one row per recipient)."""

    __tablename__ = "agent_messages"
    __table_args__ = (
        one_of("type", MessageType, "ck_agent_messages_type"),
        Index("ix_agent_messages_inbox", "to_agent", "read_at", "id"),
        Index("ix_agent_messages_thread", "thread_id", "id"),
        Index("ix_agent_messages_task", "task_id"),
    )

    id: Mapped[int] = serial_id()
    to_agent: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    from_agent: Mapped[uuid.UUID | None]
    audience: Mapped[str] = mapped_column(String(80))  # direct | broadcast | capability:<name>
    type: Mapped[str] = mapped_column(String(32))
    content: Mapped[Any] = mapped_column(JsonDoc)
    thread_id: Mapped[uuid.UUID]
    task_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a handoff_request's: the attempt its sender held, and when it stopped being pending
    attempt: Mapped[int | None]
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Resource(Base):
    """One row per lockable name: its row lock orders acquire and release, and it carries the
    fencing counter handed to each exclusive holder."""

    __tablename__ = "resources"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    fencing: Mapped[int] = mapped_column(BigInteger, default=0)


class ResourceLock(Base):
    """A lock held by a running task; valid only while its holder runs."""

    __tablename__ = "resource_locks"
    __table_args__ = (
        CheckConstraint("mode IN ('exclusive', 'shared')", name="ck_resource_locks_mode"),
        Index("ix_resource_locks_name", "name"),
        Index("ix_resource_locks_holder", "holder_task"),
    )

    id: Mapped[int] = serial_id()
    name: Mapped[str] = mapped_column(ForeignKey("resources.name"))
    mode: Mapped[str] = mapped_column(String(16))
    holder_task: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    fencing: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token, stored as its SHA-256 digest. An agent token is bound to the agent it
    registered last, and acts only as that agent."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(TextList, default=list)
    agent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BoardSession(Base):
    """A browser signed in to the web board: the digest of its cookie's random id (never the
    token), the token it signed in with and when it ends. It lasts while the token does."""

    __tablename__ = "board_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class TaskLog(Base):
    """One line of an attempt's log: a ``shell`` command's output, a handler's ``ctx.log`` and
    ``logging`` lines, an external agent's posted lines. ``seq`` numbers an attempt's lines
    from 1 in the order they were written; past the cap the last line is one truncation
    marker (stream ``omoi``). Kept for ``OMOI_LOG_RETENTION``, deleted with the task."""

    __tablename__ = "task_logs"
    __table_args__ = (
        # BRIN: lines are appended in time order, so the retention sweep finds old ones in a
        # few pages, and the appends that fill it cost it next to nothing
        Index("ix_task_logs_at", "at", postgresql_using="brin"),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    stream: Mapped[str] = mapped_column(String(16))
    line: Mapped[str] = mapped_column(Text)
