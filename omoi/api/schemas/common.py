"""What the blueprints' schemas share: field bounds from ``omoi.domain.specs``, the enum
field, the schemas two blueprints use (a cancellation, an event) and the error shape every
response uses."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from omoi.domain import specs
from omoi.domain.enums import PHASE_NAME_PATTERN, TaskStatus

INT_MAX = 2**31 - 1  # PostgreSQL integer
SERIAL = validate.Range(min=0, max=2**63 - 1)  # a BIGINT sequence number (events, messages)
TOKEN = validate.Regexp(specs.TOKEN, error="must be a short token")
KEY = validate.And(
    validate.Length(min=1, max=specs.KEY_LENGTH),
    validate.Regexp(specs.KEY, error="may not contain '#' (omoi marks repeated phases with it)"),
)
LONGEST_WAIT = validate.Range(min=0, max=specs.LONGEST_WAIT, min_inclusive=False)
# a phase name as any workflow may spell it; whether the ticket's workflow has it is the
# registry's to say (omoi/services/workflows.py), with a 422 naming the workflow's phases
PHASE_NAME = validate.Regexp(
    PHASE_NAME_PATTERN, error="is not a phase name (a phase is named by {regex})"
)


def enum_field(enum: type, **kw: Any) -> fields.String:
    """A string field that accepts only the values of ``enum`` (the document lists them)."""
    return fields.String(validate=validate.OneOf([str(v) for v in enum]), **kw)


def phase_field(**kw: Any) -> fields.String:
    """A string field that accepts any well-formed phase name (the document gives the
    pattern)."""
    return fields.String(validate=PHASE_NAME, **kw)


class TaskFacts(Schema):
    """What every view of a task shows (the API's and the board's panel): which task it is and
    where its attempts stand."""

    id = fields.UUID()
    ticket_id = fields.UUID()
    phase = fields.String()
    key = fields.String()
    task_type = fields.String()
    description = fields.String()
    status = enum_field(TaskStatus)
    attempt = fields.Integer()
    retry_count = fields.Integer()
    max_retries = fields.Integer()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(allow_none=True)


class AttemptOut(Schema):
    attempt = fields.Integer()
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    outcome = fields.String(allow_none=True)
    error = fields.Dict(allow_none=True)
    agent_id = fields.UUID(allow_none=True, metadata={"description": "the agent that ran it"})


class CancelIn(Schema):
    reason = fields.String(
        load_default="cancelled by request", validate=validate.Length(min=1, max=2000)
    )


class EventOut(Schema):
    id = fields.Integer()
    type = fields.String()
    payload = fields.Dict()
    created_at = fields.DateTime()
    actor_token_id = fields.UUID(
        allow_none=True, metadata={"description": "the API token whose request made it"}
    )
    actor_name = fields.String(allow_none=True, metadata={"description": "that token's name"})


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable reason"})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={"description": "what was wrong, where"})


class ErrorOut(Schema):
    """Every error response: ``{"error": {"code", "message", "details"}}``."""

    error = fields.Nested(ErrorDetail, required=True)
