"""The workflows blueprint's schemas."""

from __future__ import annotations

from marshmallow import Schema, fields


class WorkflowOut(Schema):
    name = fields.String()
    description = fields.String()
    phases = fields.List(fields.String())
    transitions = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class WorkflowList(Schema):
    items = fields.Nested(WorkflowOut, many=True)
