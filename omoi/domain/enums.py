"""Every status, priority and phase, once. Database CHECK constraints are built from these."""

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
OPEN_TASK_STATUSES = frozenset(set(TaskStatus) - TERMINAL_TASK_STATUSES)


class TicketStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


class Priority(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        """Lower runs first."""
        return list(Priority).index(self)


class Phase(StrEnum):
    BACKLOG = "PHASE_BACKLOG"
    REQUIREMENTS = "PHASE_REQUIREMENTS"
    DESIGN = "PHASE_DESIGN"
    IMPLEMENTATION = "PHASE_IMPLEMENTATION"
    TESTING = "PHASE_TESTING"
    DEPLOYMENT = "PHASE_DEPLOYMENT"
    RUN = "PHASE_RUN"
    DONE = "PHASE_DONE"
    BLOCKED = "PHASE_BLOCKED"


class AgentKind(StrEnum):
    CELERY = "celery"
    EXTERNAL = "external"


class AgentStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    STALE = "stale"
    OFFLINE = "offline"


class ErrorCategory(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LOST = "lost"
    INTERRUPTED = "interrupted"  # its worker was told to stop: re-queued at once, not a retry
    UPSTREAM_FAILED = "upstream_failed"


class MessageType(StrEnum):
    INFO = "info"
    QUESTION = "question"
    WARNING = "warning"
    DISCOVERY = "discovery"
    HANDOFF_REQUEST = "handoff_request"
    HANDOFF_ACCEPTED = "handoff_accepted"
    HANDOFF_DECLINED = "handoff_declined"


class LogStream(StrEnum):
    """Where a line of a task's log came from."""

    STDOUT = "stdout"  # a shell command's standard output (or an agent's, posted)
    STDERR = "stderr"
    LOG = "log"  # a handler's ctx.log and logging records
    AGENT = "agent"  # an external agent's posted lines
    OMOI = "omoi"  # the truncation marker, and nothing else


HANDLER_STREAMS = (LogStream.LOG, LogStream.STDOUT, LogStream.STDERR)  # what ctx.log writes
AGENT_STREAMS = (LogStream.AGENT, LogStream.STDOUT, LogStream.STDERR)  # what an agent posts
