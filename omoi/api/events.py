"""The event log: pages by cursor, and a live Server-Sent Events stream."""

from __future__ import annotations

import json
import select
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from typing import Any

from flask import Response, request, stream_with_context
from flask.views import MethodView

from omoi.api import auth
from omoi.api.errors import error_response
from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.events import EventFull, EventPage, EventQuery, StreamQuery
from omoi.services import events

blp = Blueprint(
    "events", __name__, url_prefix="/api/v1/events", description="Every state change, in order"
)
KEEPALIVE = 15.0
FILTERS = ("ticket_id", "entity_id", "type", "actor")
TICK = 0.5  # how often an idle stream checks its deadline, its token and its client
FULL_RETRY_AFTER = 5  # seconds a token at its stream cap is asked to wait
Frames = Generator[str | None, None, None]  # a stream's text, None when nothing came


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
            },
            "429": {"description": "this token holds as many streams as it may"},
        }
    )
    def get(self, args: dict[str, Any]) -> Response:
        """Follow the event log live (filter by ticket, entity, type or actor)."""
        filters = {k: args[k] for k in FILTERS if k in args}
        return stream_response(filters, args.get("after"), args["timeout"])


class _Frames:
    """Each event's SSE text, made once however many streams send it."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._made: OrderedDict[int, str] = OrderedDict()

    def __call__(self, row: Any) -> str:
        frame = self._made.get(row.id)
        if frame is None:
            data = json.dumps(EventFull().dump(row._asdict()))
            frame = f"id: {row.id}\nevent: {row.type}\ndata: {data}\n\n"
            self._made[row.id] = frame
            while len(self._made) > self.size:
                self._made.popitem(last=False)
        return frame


_frame = _Frames()


def _hung_up() -> Callable[[], bool]:
    """Whether the client has closed its end (under gunicorn, which hands us the socket):
    a stream's slot is free as soon as its tab is closed, not at a failed write much later."""
    sock = request.environ.get("gunicorn.socket")

    def gone() -> bool:
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # closed meanwhile
            return True

    return gone


def resumed(after: int | None) -> int | None:
    """Where a stream starts: after a reconnect's ``Last-Event-ID``, else after ``after``."""
    last = request.headers.get("Last-Event-ID", "")
    return int(last) if last.isdigit() else after


def stream_response(filters: dict[str, Any], after: int | None, timeout: float) -> Response:
    """Server-Sent Events of the log matching ``filters`` (``ticket_id``, ``entity_id``,
    ``type``, ``actor``) after the event ``after`` (a reconnect's ``Last-Event-ID`` wins),
    for ``timeout`` seconds, read from the process's shared follower (``EventHub``). The
    API's stream and the board's both answer with it."""
    hub = runtime().hub
    after = resumed(after)

    def frames(keep_going: Callable[[], bool]) -> Frames:
        with closing(hub.follow(**filters, after=after, keep_going=keep_going, tick=TICK)) as feed:
            for rows in feed:
                yield "".join(_frame(row) for row in rows) if rows else None

    return sse_response(frames, timeout)


def sse_response(frames: Callable[[Callable[[], bool]], Frames], timeout: float) -> Response:
    """A Server-Sent Events response of what ``frames(keep_going)`` yields: text to send,
    or ``None`` when nothing came (at least every ``TICK`` seconds); it ends when ``frames``
    does, after ``timeout`` seconds (``keep_going`` turns false), when its token is revoked
    (within the revocation delay) or when its client hangs up. Every stream, of the event log
    or of a task's log, holds one of its token's ``OMOI_MAX_STREAMS_PER_TOKEN`` slots in this
    process until it ends (429 beyond them); each is a greenlet, not a thread."""
    rt = runtime()
    who = auth.principal()
    if not rt.streams.take(who.token_id):
        resp = error_response(
            429,
            "too_many_streams",
            f"this token already holds {rt.streams.cap} streams here; close one",
        )
        resp.headers["Retry-After"] = str(FULL_RETRY_AFTER)
        return resp
    deadline = time.monotonic() + timeout
    gone = _hung_up()
    released = False

    def release() -> None:
        """Give the slot back once: when the stream ends, or when a response that never
        started streaming is closed."""
        nonlocal released
        if not released:
            released = True
            rt.streams.give(who.token_id)

    def stream() -> Iterator[str]:
        feed = frames(lambda: time.monotonic() < deadline)
        with closing(feed):
            try:
                yield "retry: 1000\n\n"
                quiet_since = time.monotonic()
                for text in feed:
                    now = time.monotonic()
                    if rt.streams.revoked(who.token_id):
                        return
                    if text:
                        quiet_since = now
                        yield text
                    elif gone():
                        return
                    elif now - quiet_since > KEEPALIVE:
                        quiet_since = now
                        yield ": keepalive\n\n"
            finally:
                release()

    resp = Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    resp.call_on_close(release)
    return resp
