"""Every status and priority, once, and what names a phase. Database CHECK constraints are built
from these."""

import re
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


# A workflow names its own phases (omoi/domain/workflow.py checks each file): an upper-case
# letter, then up to 31 upper-case letters, digits or underscores, to fit the 32-character
# phase columns. The database checks the same pattern (tables.PHASE_CHECKS).
PHASE_NAME_LENGTH = 32
PHASE_NAME_PATTERN = f"^[A-Z][A-Z0-9_]{{0,{PHASE_NAME_LENGTH - 1}}}$"
PHASE_NAME = re.compile(PHASE_NAME_PATTERN)
# Every workflow shares these two: its last phase, and the one any working phase may block in.
PHASE_DONE = "PHASE_DONE"
PHASE_BLOCKED = "PHASE_BLOCKED"


def is_phase_name(value: object) -> bool:
    """Whether ``value`` may name a phase (any workflow's; not whether one has it)."""
    return isinstance(value, str) and PHASE_NAME.fullmatch(value) is not None


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
