"""The locks blueprint's schemas: held locks and the tasks waiting for them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


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
