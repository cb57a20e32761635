"""The tickets blueprint's schemas: a submitted ticket and its tasks, pages and progress,
phase transitions, gates, artifacts, approvals and context."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, pre_load, validate, validates

from omoi.api.runtime import runtime
from omoi.api.schemas.common import KEY, LONGEST_WAIT, SERIAL, TOKEN, enum_field, phase_field
from omoi.domain import specs
from omoi.domain.enums import Priority, TaskStatus, TicketStatus
from omoi.domain.routing import normalize_capabilities
from omoi.services import submission
from omoi.services.phases import NewTask
from omoi.services.submission import NewTicket


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
    priority = enum_field(Priority, load_default=None)
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
    phase = phase_field(
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
    priority = enum_field(Priority, load_default=str(Priority.MEDIUM))
    workflow = fields.String(load_default="dag", validate=validate.Length(min=1, max=64))
    # one load of many rather than a List of 10,000 single loads: a third less time
    tasks = fields.Nested(
        TaskIn, many=True, load_default=list, error_messages={"type": "Not a valid list."}
    )

    @pre_load
    def _size(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            submission.check_size(len(data["tasks"]), runtime().settings.max_tasks_per_ticket)
        return data

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> NewTicket:
        return NewTicket(**data)


class TaskBrief(Schema):
    id = fields.UUID()
    key = fields.String()
    status = enum_field(TaskStatus)


class TicketOut(Schema):
    id = fields.UUID()
    title = fields.String()
    description = fields.String()
    priority = enum_field(Priority)
    workflow = fields.String()
    phase = fields.String()
    previous_phase = fields.String(allow_none=True)
    status = enum_field(TicketStatus)
    context = fields.Dict()
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    task_counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    progress = fields.Float(metadata={"description": "share of tasks in a terminal state"})


class PhaseProgressOut(Schema):
    phase = fields.String()
    task_counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    progress = fields.Float(metadata={"description": "share of the phase's tasks finished"})


class PhaseProgressList(Schema):
    items = fields.Nested(PhaseProgressOut, many=True)


class TicketCreated(TicketOut):
    tasks = fields.Nested(TaskBrief, many=True)


class TicketQuery(Schema):
    status = enum_field(TicketStatus)
    phase = phase_field(metadata={"description": "a phase of `workflow`, or of any workflow"})
    workflow = fields.String()
    cursor = fields.UUID()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class TicketPage(Schema):
    items = fields.Nested(TicketOut, many=True)
    next_cursor = fields.String(allow_none=True)


def _note() -> fields.String:
    """A client-supplied ``by``: kept as a note, never as who acted (that is the token)."""
    return fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "a note: who the client says acts (the token is recorded)"},
    )


class TransitionIn(Schema):
    to_phase = phase_field(required=True)
    reason = fields.String(load_default="moved by hand", validate=validate.Length(max=2000))
    force = fields.Boolean(load_default=False)
    by = _note()


class ValidTransitions(Schema):
    ticket_id = fields.UUID()
    workflow = fields.String()
    phase = fields.String()
    status = enum_field(TicketStatus)
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
    status = enum_field(TicketStatus)
    requires = fields.Dict(allow_none=True)
    latest = fields.Dict(allow_none=True)


class ArtifactIn(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    content = fields.Raw(required=True)
    path = fields.String(load_default=None, validate=validate.Length(max=1000))
    phase = phase_field(load_default=None)


class ArtifactCreated(Schema):
    id = fields.Integer()


class ArtifactOut(Schema):
    id = fields.Integer()
    ticket_id = fields.UUID()
    phase = fields.String()
    type = fields.String()
    path = fields.String(allow_none=True)
    content = fields.Raw()
    task_id = fields.UUID(
        allow_none=True, metadata={"description": "the task that produced it, if one did"}
    )
    created_at = fields.DateTime()


class ArtifactQuery(Schema):
    phase = phase_field()
    after = fields.Integer(validate=SERIAL)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class ArtifactPage(Schema):
    items = fields.Nested(ArtifactOut, many=True)
    next_cursor = fields.Integer(allow_none=True)


class ApproveIn(Schema):
    by = _note()
    comment = fields.String(load_default="", validate=validate.Length(max=5000))
    phase = phase_field(load_default=None)


class ContextOut(Schema):
    ticket_id = fields.UUID()
    summary = fields.String(allow_none=True)
    phases = fields.Dict()
