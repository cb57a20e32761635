"""Every event type omoi writes, in one place: ``<entity>.<past-tense verb>``."""

from enum import StrEnum


class EventType(StrEnum):
    TICKET_CREATED = "ticket.created"
    TICKET_PHASE_CHANGED = "ticket.phase_changed"
    TICKET_COMPLETED = "ticket.completed"
    TICKET_BLOCKED = "ticket.blocked"
    TASK_QUEUED = "task.queued"
    TASK_STARTED = "task.started"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_SUPERSEDED = "task.superseded"
    TASK_REPUBLISHED = "task.republished"
    TASK_RETRY_SCHEDULED = "task.retry_scheduled"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_RETRIED = "task.retried"
    TICKET_CANCELLED = "ticket.cancelled"
    TICKET_REOPENED = "ticket.reopened"
    AGENT_REGISTERED = "agent.registered"
    AGENT_STALE = "agent.stale"
    AGENT_REVIVED = "agent.revived"
    AGENT_OFFLINE = "agent.offline"
