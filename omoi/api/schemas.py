"""marshmallow schemas: the API's contract. Unknown fields are rejected (RAISE), which the
OpenAPI document states as ``additionalProperties: false``."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
)

from omoi.api.runtime import runtime
from omoi.domain import specs
from omoi.domain.enums import (
    AgentKind,
    AgentStatus,
    ErrorCategory,
    MessageType,
    Phase,
    Priority,
    TaskStatus,
    TicketStatus,
)
from omoi.domain.routing import normalize_capabilities
from omoi.services import tickets
from omoi.services.phases import NewTask
from omoi.services.tickets import NewTicket

INT_MAX = 2**31 - 1  # PostgreSQL integer
SERIAL = validate.Range(min=0, max=2**63 - 1)  # a BIGINT sequence number (events, messages)

TOKEN = validate.Regexp(specs.TOKEN, error="must be a short token")
KEY = validate.And(
    validate.Length(min=1, max=specs.KEY_LENGTH),
    validate.Regexp(specs.KEY, error="may not contain '#' (omoi marks repeated phases with it)"),
)
LONGEST_WAIT = validate.Range(min=0, max=specs.LONGEST_WAIT, min_inclusive=False)


def _enum(enum: type, **kw: Any) -> fields.String:
    return fields.String(validate=validate.OneOf([str(v) for v in enum]), **kw)


class SyncIn(Schema):
    need = fields.Integer(
        required=True,
        validate=validate.Range(min=1),
        metadata={"description": "how many dependencies must succeed"},
    )
    timeout_seconds = fields.Float(load_default=None, validate=LONGEST_WAIT)


class TaskIn(Schema):
    key = fields.String(required=True, validate=KEY)
    task_type = fields.String(
        required=True, validate=validate.Length(min=1, max=specs.TASK_TYPE_LENGTH)
    )
    depends_on = fields.List(fields.String(validate=KEY), load_default=list)
    description = fields.String(
        load_default="", validate=validate.Length(max=specs.DESCRIPTION_LENGTH)
    )
    capabilities = fields.List(
        fields.String(validate=TOKEN),
        load_default=list,
        validate=validate.Length(max=specs.CAPABILITIES),
    )
    payload = fields.Dict(keys=fields.String(), load_default=dict)
    priority = _enum(Priority, load_default=None)
    max_retries = fields.Integer(
        load_default=None, validate=validate.Range(min=0, max=specs.MAX_RETRIES)
    )
    retry_backoff = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=specs.FIRST_BACKOFF, min_inclusive=False),
        metadata={"description": "seconds before the first retry; doubles each retry"},
    )
    retry_backoff_max = fields.Float(
        load_default=None,
        validate=LONGEST_WAIT,
        metadata={"description": "the longest wait between two attempts"},
    )
    timeout_seconds = fields.Float(load_default=None, validate=LONGEST_WAIT)
    resources = fields.List(
        fields.String(validate=validate.Length(min=1, max=specs.RESOURCE_LENGTH)),
        load_default=list,
    )
    sync = fields.Nested(
        SyncIn,
        load_default=None,
        metadata={"description": "a sync point: ready when `need` of depends_on succeeded"},
    )
    phase = _enum(
        Phase,
        load_default=None,
        metadata={"description": "the workflow phase it belongs to (default: first)"},
    )
    external = fields.Boolean(
        load_default=False,
        metadata={"description": "only external agents claim it; never sent to Celery"},
    )

    @validates("capabilities")
    def _caps(self, value: list[str], **_: Any) -> None:
        if len(normalize_capabilities(value)) != len(value):
            raise ValidationError("capabilities must be distinct (case-insensitive)")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> NewTask:
        return NewTask(**data)


class TicketIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    description = fields.String(load_default="", validate=validate.Length(max=100_000))
    priority = _enum(Priority, load_default=str(Priority.MEDIUM))
    workflow = fields.String(load_default="dag", validate=validate.Length(min=1, max=64))
    # one load of many rather than a List of 10,000 single loads: a third less time
    tasks = fields.Nested(
        TaskIn, many=True, load_default=list, error_messages={"type": "Not a valid list."}
    )

    @pre_load
    def _size(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            tickets.check_size(len(data["tasks"]), runtime().settings.max_tasks_per_ticket)
        return data

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> NewTicket:
        return NewTicket(**data)


class TaskBrief(Schema):
    id = fields.UUID()
    key = fields.String()
    status = _enum(TaskStatus)


class TicketOut(Schema):
    id = fields.UUID()
    title = fields.String()
    description = fields.String()
    priority = _enum(Priority)
    workflow = fields.String()
    phase = _enum(Phase)
    previous_phase = fields.String(allow_none=True)
    status = _enum(TicketStatus)
    context = fields.Dict()
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    task_counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    progress = fields.Float(metadata={"description": "share of tasks in a terminal state"})


class PhaseProgressOut(Schema):
    phase = _enum(Phase)
    task_counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    progress = fields.Float(metadata={"description": "share of the phase's tasks finished"})


class PhaseProgressList(Schema):
    items = fields.Nested(PhaseProgressOut, many=True)


class TicketCreated(TicketOut):
    tasks = fields.Nested(TaskBrief, many=True)


class EventOut(Schema):
    id = fields.Integer()
    type = fields.String()
    payload = fields.Dict()
    created_at = fields.DateTime()
    actor_token_id = fields.UUID(
        allow_none=True, metadata={"description": "the API token whose request made it"}
    )
    actor_name = fields.String(allow_none=True, metadata={"description": "that token's name"})


class TaskOut(Schema):
    id = fields.UUID()
    ticket_id = fields.UUID()
    phase = fields.String()
    key = fields.String()
    task_type = fields.String()
    description = fields.String()
    capabilities = fields.List(fields.String())
    payload = fields.Dict()
    priority = _enum(Priority)
    depends_on = fields.List(fields.String())
    unmet_dependencies = fields.Integer()
    status = _enum(TaskStatus)
    attempt = fields.Integer()
    retry_count = fields.Integer()
    max_retries = fields.Integer()
    retry_backoff = fields.Float(allow_none=True)
    retry_backoff_max = fields.Float(allow_none=True)
    timeout_seconds = fields.Float(allow_none=True)
    resources = fields.List(fields.String())
    external = fields.Boolean()
    waiting_for = fields.String(
        allow_none=True,
        metadata={
            "description": "why a queued task waits: the lock it needs or, in GET "
            "/tasks/{id}, that no live worker has enabled its exec task type"
        },
    )
    sync_need = fields.Integer(allow_none=True)
    sync_deadline = fields.DateTime(allow_none=True)
    agent_id = fields.UUID(allow_none=True)
    celery_id = fields.String(allow_none=True)
    result = fields.Raw(allow_none=True)
    error = fields.Dict(allow_none=True)
    created_at = fields.DateTime()
    queued_at = fields.DateTime(allow_none=True)
    published_at = fields.DateTime(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)


class AttemptOut(Schema):
    attempt = fields.Integer()
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    outcome = fields.String(allow_none=True)
    error = fields.Dict(allow_none=True)


class TaskDetail(TaskOut):
    blocks = fields.List(fields.UUID())
    attempts = fields.Nested(AttemptOut, many=True)
    timeline = fields.Nested(EventOut, many=True)


class CancelIn(Schema):
    reason = fields.String(
        load_default="cancelled by request", validate=validate.Length(min=1, max=2000)
    )


class TicketQuery(Schema):
    status = _enum(TicketStatus)
    phase = _enum(Phase)
    workflow = fields.String()
    cursor = fields.UUID()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class TaskQuery(Schema):
    ticket_id = fields.UUID()
    status = _enum(TaskStatus)
    cursor = fields.UUID()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class TicketPage(Schema):
    items = fields.Nested(TicketOut, many=True)
    next_cursor = fields.String(allow_none=True)


class TaskPage(Schema):
    items = fields.Nested(TaskOut, many=True)
    next_cursor = fields.String(allow_none=True)


class AgentRegisterIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    capabilities = fields.List(
        fields.String(validate=TOKEN), required=True, validate=validate.Length(min=1, max=32)
    )
    capacity = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000))
    version = fields.String(load_default=None, validate=validate.Length(max=64))
    hostname = fields.String(load_default=None, validate=validate.Length(max=255))
    pid = fields.Integer(load_default=None, validate=validate.Range(min=0, max=INT_MAX))


class AgentOut(Schema):
    id = fields.UUID()
    name = fields.String()
    kind = _enum(AgentKind)
    capabilities = fields.List(fields.String())
    capacity = fields.Integer()
    status = _enum(AgentStatus)
    last_heartbeat = fields.DateTime(allow_none=True)
    version = fields.String(allow_none=True)
    hostname = fields.String(allow_none=True)
    pid = fields.Integer(allow_none=True)
    registered_at = fields.DateTime()
    enabled_task_types = fields.List(
        fields.String(),
        metadata={"description": "exec task types its operator enabled (Celery workers)"},
    )
    running_tasks = fields.Integer()
    free_capacity = fields.Integer()


class AgentList(Schema):
    items = fields.Nested(AgentOut, many=True)


class AgentQuery(Schema):
    capability = fields.String(validate=TOKEN)
    status = _enum(AgentStatus)
    kind = _enum(AgentKind)


class BestFitQuery(Schema):
    capabilities = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "comma-separated, e.g. python,review"},
    )


class AgentHealth(Schema):
    agent_id = fields.UUID()
    status = _enum(AgentStatus)
    healthy = fields.Boolean()
    last_heartbeat = fields.DateTime(allow_none=True)
    seconds_since_heartbeat = fields.Float(allow_none=True)
    heartbeat_timeout = fields.Float()
    running_tasks = fields.Integer()
    capacity = fields.Integer()
    free_capacity = fields.Integer()


class AgentStats(Schema):
    agents = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_kind = fields.Dict(keys=fields.String(), values=fields.Integer())
    live_capacity = fields.Integer()
    running_tasks = fields.Integer()
    utilisation = fields.Float()


class HeartbeatIn(Schema):
    running = fields.List(
        fields.UUID(),
        load_default=None,
        validate=validate.Length(max=10_000),
        metadata={
            "description": "ids of the tasks this agent runs now; once an agent sends it, a "
            "running task it stops naming for a heartbeat timeout is recovered as lost"
        },
    )


class HeartbeatOut(Schema):
    agent_id = fields.UUID()
    status = _enum(AgentStatus)


class ClaimOut(Schema):
    task_id = fields.UUID()
    ticket_id = fields.UUID()
    key = fields.String()
    task_type = fields.String()
    attempt = fields.Integer()
    idempotency_key = fields.String(
        metadata={"description": "the same for every attempt of the task: a dedupe key"}
    )
    lease_token = fields.UUID()
    payload = fields.Dict()
    timeout_seconds = fields.Float(allow_none=True)
    dependency_results = fields.Dict()
    ticket_context = fields.Dict()


class CompleteIn(Schema):
    lease_token = fields.UUID(required=True)
    result = fields.Raw(load_default=None, allow_none=True)


class ReportedError(Schema):
    message = fields.String(required=True, validate=validate.Length(max=5000))
    type = fields.String(load_default="ExternalError", validate=validate.Length(min=1, max=200))
    category = fields.String(
        load_default=str(ErrorCategory.TRANSIENT),
        validate=validate.OneOf(
            [
                str(c)
                for c in (ErrorCategory.TRANSIENT, ErrorCategory.PERMANENT, ErrorCategory.TIMEOUT)
            ]
        ),
    )


class FailIn(Schema):
    lease_token = fields.UUID(required=True)
    error = fields.Nested(ReportedError, required=True)


def _note() -> fields.String:
    """A client-supplied ``by``: kept as a note, never as who acted (that is the token)."""
    return fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "a note: who the client says acts (the token is recorded)"},
    )


class TransitionIn(Schema):
    to_phase = _enum(Phase, required=True)
    reason = fields.String(load_default="moved by hand", validate=validate.Length(max=2000))
    force = fields.Boolean(load_default=False)
    by = _note()


class ValidTransitions(Schema):
    ticket_id = fields.UUID()
    workflow = fields.String()
    phase = _enum(Phase)
    status = _enum(TicketStatus)
    allowed = fields.List(fields.String())


class HistoryOut(Schema):
    id = fields.Integer()
    from_phase = fields.String(allow_none=True)
    to_phase = fields.String()
    reason = fields.String()
    by = fields.String(metadata={"description": "the token that moved it, or the gate"})
    note = fields.String(allow_none=True, metadata={"description": "a name its client gave"})
    created_at = fields.DateTime()


class HistoryList(Schema):
    items = fields.Nested(HistoryOut, many=True)


class GateStatus(Schema):
    ticket_id = fields.UUID()
    phase = fields.String(allow_none=True)
    status = _enum(TicketStatus)
    requires = fields.Dict(allow_none=True)
    latest = fields.Dict(allow_none=True)


class ArtifactIn(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    content = fields.Raw(required=True)
    path = fields.String(load_default=None, validate=validate.Length(max=1000))
    phase = _enum(Phase, load_default=None)


class ArtifactCreated(Schema):
    id = fields.Integer()


class ApproveIn(Schema):
    by = _note()
    comment = fields.String(load_default="", validate=validate.Length(max=5000))
    phase = _enum(Phase, load_default=None)


class ContextOut(Schema):
    ticket_id = fields.UUID()
    summary = fields.String(allow_none=True)
    phases = fields.Dict()


class WorkflowOut(Schema):
    name = fields.String()
    description = fields.String()
    phases = fields.List(fields.String())
    transitions = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class WorkflowList(Schema):
    items = fields.Nested(WorkflowOut, many=True)


class EventFull(EventOut):
    entity_type = fields.String()
    entity_id = fields.UUID(allow_none=True)
    ticket_id = fields.UUID(allow_none=True)


class EventPage(Schema):
    items = fields.Nested(EventFull, many=True)
    next_cursor = fields.Integer(allow_none=True)


def _actor_filter() -> fields.String:
    return fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "events made with this token: its id or its name"},
    )


class EventQuery(Schema):
    ticket_id = fields.UUID()
    entity_id = fields.UUID()
    type = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "an event type or a prefix (task.)"},
    )
    actor = _actor_filter()
    after = fields.Integer(validate=SERIAL)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class StreamQuery(Schema):
    ticket_id = fields.UUID()
    entity_id = fields.UUID()
    type = fields.String(validate=validate.Length(min=1, max=64))
    actor = _actor_filter()
    after = fields.Integer(validate=SERIAL)
    timeout = fields.Float(
        load_default=300,
        validate=validate.Range(min=0.1, max=3600),
        metadata={"description": "seconds before the server ends the stream"},
    )


class MessageIn(Schema):
    type = _enum(MessageType, load_default=str(MessageType.INFO))
    content = fields.Raw(required=True)
    from_agent = fields.UUID(load_default=None)
    thread_id = fields.UUID(load_default=None)
    task_id = fields.UUID(load_default=None)


class AddressedMessageIn(MessageIn):
    to_agent = fields.UUID(load_default=None)
    capability = fields.String(load_default=None, validate=TOKEN)
    broadcast = fields.Boolean(load_default=False)


class SentOut(Schema):
    message_ids = fields.List(fields.Integer())
    thread_id = fields.UUID()
    lease_token = fields.UUID(allow_none=True)


class MessageOut(Schema):
    id = fields.Integer()
    to_agent = fields.UUID()
    from_agent = fields.UUID(allow_none=True)
    audience = fields.String()
    type = _enum(MessageType)
    content = fields.Raw()
    thread_id = fields.UUID()
    task_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)


class InboxQuery(Schema):
    unread_only = fields.Boolean(load_default=False)
    thread_id = fields.UUID()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class Inbox(Schema):
    items = fields.Nested(MessageOut, many=True)


class ReadIn(Schema):
    message_ids = fields.List(
        fields.Integer(validate=SERIAL), required=True, validate=validate.Length(min=1, max=1000)
    )


class ReadOut(Schema):
    marked = fields.Integer()


class LockOut(Schema):
    name = fields.String()
    mode = fields.String()
    holder_task = fields.UUID()
    fencing = fields.Integer()
    acquired_at = fields.DateTime()


class WaiterOut(Schema):
    id = fields.UUID()
    key = fields.String()
    ticket_id = fields.UUID()
    waiting_for = fields.String()


class LocksOut(Schema):
    held = fields.Nested(LockOut, many=True)
    waiting = fields.Nested(WaiterOut, many=True)


class LockQuery(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable reason"})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "what was wrong, where"})


class ErrorOut(Schema):
    """Every error response: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorDetail, required=True)
