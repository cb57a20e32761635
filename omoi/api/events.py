"""The event log: pages by cursor, and a live Server-Sent Events stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint

from omoi.api.runtime import runtime
from omoi.api.schemas import EventFull, EventPage, EventQuery, StreamQuery
from omoi.services import events

blp = Blueprint(
    "events", __name__, url_prefix="/api/v1/events", description="Every state change, in order"
)
KEEPALIVE = 15.0
FILTERS = ("ticket_id", "entity_id", "type", "actor")


@blp.route("")
class Events(MethodView):
    @blp.arguments(EventQuery, location="query")
    @blp.response(200, EventPage)
    def get(self, args: dict[str, Any]) -> Any:
        """Oldest first; pass ``next_cursor`` back as ``after``."""
        rows, cursor = events.list_events(runtime().db, **args)
        return {"items": rows, "next_cursor": cursor}


@blp.route("/stream")
class Stream(MethodView):
    @blp.arguments(StreamQuery, location="query")
    @blp.doc(
        responses={
            "200": {
                "description": "Server-Sent Events; each has the event's id, "
                "so a reconnect with Last-Event-ID resumes after it",
                "content": {"text/event-stream": {}},
            }
        }
    )
    def get(self, args: dict[str, Any]) -> Response:
        """Follow the event log live (filter by ticket, entity, type or actor)."""
        filters = {k: args[k] for k in FILTERS if k in args}
        return stream_response(filters, args.get("after"), args["timeout"])


def stream_response(filters: dict[str, Any], after: int | None, timeout: float) -> Response:
    """Server-Sent Events of the log matching ``filters`` (``ticket_id``, ``entity_id``,
    ``type``, ``actor``) after the event ``after`` (a reconnect's ``Last-Event-ID`` wins),
    for ``timeout`` seconds. The API's stream and the board's (omoi/api/board.py) both
    answer with it."""
    last = request.headers.get("Last-Event-ID", "")
    after = int(last) if last.isdigit() else after
    deadline = time.monotonic() + timeout
    db = runtime().db

    def stream() -> Iterator[str]:
        quiet_since = time.monotonic()
        feed = events.follow(
            db,
            ticket_id=filters.get("ticket_id"),
            entity_id=filters.get("entity_id"),
            type=filters.get("type"),
            actor=filters.get("actor"),
            after=after,
            keep_going=lambda: time.monotonic() < deadline,
        )
        yield "retry: 1000\n\n"
        for row in feed:
            if row is None:
                if time.monotonic() - quiet_since > KEEPALIVE:
                    quiet_since = time.monotonic()
                    yield ": keepalive\n\n"
                continue
            quiet_since = time.monotonic()
            data = json.dumps(EventFull().dump(row._asdict()))
            yield f"id: {row.id}\nevent: {row.type}\ndata: {data}\n\n"

    return Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
