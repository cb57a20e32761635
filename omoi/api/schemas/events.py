"""The events blueprint's schemas: the event log, its pages and filters, the live stream's
query (the board's stream shares it)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from omoi.api.schemas.common import SERIAL, EventOut


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
