"""The tasks blueprint's schemas: a task, its attempts and timeline, pages of tasks, and
what an external agent reports (complete, fail)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from omoi.api.schemas.common import INT_MAX, AttemptOut, EventOut, TaskFacts, enum_field
from omoi.domain.enums import AGENT_STREAMS, ErrorCategory, LogStream, Priority, TaskStatus


class TaskOut(TaskFacts):
    capabilities = fields.List(fields.String())
    payload = fields.Dict()
    priority = enum_field(Priority)
    depends_on = fields.List(fields.String())
    unmet_dependencies = fields.Integer()
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
    queued_at = fields.DateTime(allow_none=True)
    published_at = fields.DateTime(allow_none=True)


class TaskDetail(TaskOut):
    blocks = fields.List(fields.UUID())
    attempts = fields.Nested(AttemptOut, many=True)
    timeline = fields.Nested(EventOut, many=True)


class TaskQuery(Schema):
    ticket_id = fields.UUID()
    status = enum_field(TaskStatus)
    cursor = fields.UUID()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    order = fields.String(
        load_default="oldest",
        validate=validate.OneOf(["oldest", "newest"]),
        metadata={"description": "creation order, or the newest first"},
    )


class TaskPage(Schema):
    items = fields.Nested(TaskOut, many=True)
    next_cursor = fields.String(allow_none=True)


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


LOG_LINES_PER_POST = 1000


class _LogPlace(Schema):
    attempt = fields.Integer(
        validate=validate.Range(min=1, max=INT_MAX),
        metadata={"description": "the attempt whose log to read; default: the latest"},
    )
    after = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=INT_MAX),
        metadata={"description": "lines after this one (a previous page's next_after)"},
    )


class LogQuery(_LogPlace):
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=1000))


class LogStreamQuery(_LogPlace):
    timeout = fields.Float(
        load_default=300,
        validate=validate.Range(min=0.1, max=3600),
        metadata={"description": "seconds before the server ends the stream"},
    )


class LogLineOut(Schema):
    seq = fields.Integer(metadata={"description": "the line's number in its attempt, from 1"})
    attempt = fields.Integer()
    at = fields.DateTime(metadata={"description": "when it was written"})
    stream = enum_field(
        LogStream,
        metadata={
            "description": "stdout, stderr (a shell command's, or posted), log (ctx.log and "
            "logging), agent (posted by an external agent), omoi (the truncation marker)"
        },
    )
    line = fields.String()


class LogPage(Schema):
    task_id = fields.UUID()
    attempt = fields.Integer(metadata={"description": "the attempt read"})
    lines = fields.Nested(LogLineOut, many=True)
    next_after = fields.Integer(metadata={"description": "pass it back as after"})
    truncated = fields.Boolean(
        metadata={"description": "the attempt's log reached OMOI_LOG_MAX_LINES"}
    )


class LogsIn(Schema):
    lease_token = fields.UUID(required=True)
    lines = fields.List(
        fields.String(
            validate=validate.Regexp(r"[^\r\n]*\Z", error="one line each: no line breaks")
        ),
        required=True,
        validate=validate.Length(min=1, max=LOG_LINES_PER_POST),
    )
    stream = fields.String(
        load_default=str(LogStream.AGENT), validate=validate.OneOf([str(s) for s in AGENT_STREAMS])
    )


class LogsStored(Schema):
    task_id = fields.UUID()
    attempt = fields.Integer()
    stored = fields.Integer(metadata={"description": "lines stored (past the cap: fewer)"})
    truncated = fields.Boolean(
        metadata={"description": "the attempt's log reached OMOI_LOG_MAX_LINES"}
    )
