"""The web board's schemas: each page's query (its filters, what it collapses, whether the
script asks for the live region alone) and the task panel's JSON."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_load, validate
from webargs.fields import DelimitedList

from omoi.api.schemas.common import AttemptOut, TaskFacts, enum_field
from omoi.domain.enums import PHASE_NAME_PATTERN
from omoi.domain.progress import TicketState
from omoi.domain.workflow import MAX_PHASES

NOTHING = "none"  # ``collapse=none``: every phase drawn in full


class PageQuery(Schema):
    partial = fields.Boolean(metadata={"description": "the page's live region alone"})

    @pre_load
    def drop_empty(self, data: Any, **_: Any) -> dict[str, Any]:
        """A form's empty field filters nothing."""
        return {k: v for k, v in data.items() if v != ""}


class BoardQuery(PageQuery):
    q = fields.String(
        validate=validate.Length(max=200), metadata={"description": "text in the title"}
    )
    state = enum_field(TicketState)
    workflow = fields.String(validate=validate.Length(max=64))
    finished = fields.String(
        validate=validate.OneOf(["all"]),
        metadata={"description": "every done and cancelled ticket, not only the newest"},
    )


class TicketQuery(PageQuery):
    collapse = DelimitedList(
        fields.String(
            validate=validate.Regexp(
                f"{PHASE_NAME_PATTERN}|^{NOTHING}$", error="is neither a phase name nor none"
            )
        ),
        validate=validate.Length(max=MAX_PHASES),
        metadata={"description": "phases of the ticket drawn as one box each, or none"},
    )


class FleetQuery(PageQuery):
    all = fields.Boolean(metadata={"description": "agents long offline too"})


class PanelTask(Schema):
    id = fields.UUID()
    key = fields.String()
    status = fields.String()


class PanelAttempt(AttemptOut):
    agent_name = fields.String(allow_none=True)


class PanelError(Schema):
    category = fields.String()
    type = fields.String()
    message = fields.String()
    traceback = fields.String(allow_none=True)


class TaskPanelOut(TaskFacts):
    """One task as the board's panel shows it; ``result`` and ``payload`` as indented JSON."""

    waiting_for = fields.String(allow_none=True)
    depends_on = fields.Nested(PanelTask, many=True)
    blocks = fields.Nested(PanelTask, many=True)
    attempts = fields.Nested(PanelAttempt, many=True)
    error = fields.Nested(PanelError, allow_none=True)
    result = fields.String(allow_none=True)
    payload = fields.String(allow_none=True)
