"""The agents blueprint's schemas: registration, an agent, its health and heartbeat, the
fleet's stats and what a claim hands an external agent."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from omoi.api.schemas.common import INT_MAX, TOKEN, enum_field
from omoi.domain.enums import AgentKind, AgentStatus


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
    kind = enum_field(AgentKind)
    capabilities = fields.List(fields.String())
    capacity = fields.Integer()
    status = enum_field(AgentStatus)
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
    status = enum_field(AgentStatus)
    kind = enum_field(AgentKind)


class BestFitQuery(Schema):
    capabilities = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "comma-separated, e.g. python,review"},
    )


class AgentHealth(Schema):
    agent_id = fields.UUID()
    status = enum_field(AgentStatus)
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
    status = enum_field(AgentStatus)


CLAIM_WAIT = 60.0  # seconds: a proxy's idle timeout is rarely shorter
CLAIM_BATCH = 100


class ClaimQuery(Schema):
    wait = fields.Float(
        load_default=0.0,
        validate=validate.Range(min=0, max=CLAIM_WAIT),
        metadata={
            "description": f"seconds (at most {CLAIM_WAIT:.0f}) to wait for a task this agent "
            "may take when none is ready: the answer comes as soon as one is"
        },
    )


class ClaimsQuery(ClaimQuery):
    max = fields.Integer(
        load_default=10,
        validate=validate.Range(min=1, max=CLAIM_BATCH),
        metadata={"description": f"the most tasks to claim (at most {CLAIM_BATCH})"},
    )


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


class ClaimList(Schema):
    items = fields.List(fields.Nested(ClaimOut))
