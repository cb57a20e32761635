"""Agent messaging: durable inboxes, direct / by-capability / broadcast sends, handoffs."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from flask.views import MethodView

from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.messages import (
    AddressedMessageIn,
    Inbox,
    InboxQuery,
    MessageIn,
    ReadIn,
    ReadOut,
    SentOut,
)
from omoi.services import messaging

blp = Blueprint(
    "messages", __name__, url_prefix="/api/v1", description="Agents talking to each other"
)

# a handoff's refusals (omoi.services.messaging says when a request is pending)
NOT_YOURS = "A handoff_request from an agent not holding the task; capabilities short of it"
NOT_PENDING = "A handoff answer to no pending handoff_request, or for a task not running"


def _send(body: dict[str, Any], **address: Any) -> dict[str, Any]:
    sent = messaging.send(
        runtime().db,
        type=body["type"],
        content=body["content"],
        sender=body["from_agent"],
        thread_id=body["thread_id"],
        task_id=body["task_id"],
        **address,
    )
    return dataclasses.asdict(sent)


@blp.route("/messages")
class Messages(MethodView):
    @blp.arguments(AddressedMessageIn)
    @blp.response(201, SentOut)
    @blp.alt_response(403, description=NOT_YOURS)
    @blp.alt_response(409, description=NOT_PENDING)
    def post(self, body: dict[str, Any]) -> Any:
        """Send to one agent (``to_agent``), every agent with a ``capability``, or everyone."""
        return _send(
            body,
            to_agent=body.pop("to_agent"),
            capability=body.pop("capability"),
            broadcast=body.pop("broadcast"),
        )


@blp.route("/agents/<uuid:agent_id>/messages")
class AgentInbox(MethodView):
    @blp.arguments(MessageIn)
    @blp.response(201, SentOut)
    @blp.alt_response(403, description=NOT_YOURS)
    @blp.alt_response(409, description=NOT_PENDING)
    def post(self, body: dict[str, Any], agent_id: uuid.UUID) -> Any:
        """Send a message to this agent; it waits in the inbox if the agent is away."""
        return _send(body, to_agent=agent_id)

    @blp.arguments(InboxQuery, location="query")
    @blp.response(200, Inbox)
    def get(self, args: dict[str, Any], agent_id: uuid.UUID) -> Any:
        """This agent's inbox, oldest first."""
        return {"items": messaging.inbox(runtime().db, agent_id, **args)}


@blp.route("/agents/<uuid:agent_id>/messages/read")
class MarkRead(MethodView):
    @blp.arguments(ReadIn)
    @blp.response(200, ReadOut)
    def post(self, body: dict[str, Any], agent_id: uuid.UUID) -> Any:
        return {"marked": messaging.mark_read(runtime().db, agent_id, body["message_ids"])}
