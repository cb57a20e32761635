"""The messages blueprint's schemas: sending, an inbox and marking read."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from omoi.api.schemas.common import SERIAL, TOKEN, enum_field
from omoi.domain.enums import MessageType


class MessageIn(Schema):
    type = enum_field(MessageType, load_default=str(MessageType.INFO))
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
    type = enum_field(MessageType)
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
