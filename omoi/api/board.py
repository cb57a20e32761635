"""The web board: server-rendered pages that refresh their live region whenever the board's
event stream (``/board/stream``) says something changed (omoi/api/static/board.js).
``?partial=1`` renders that region alone. A browser signs in by posting a token to the form
at ``/board/login`` and gets a read-only board session (omoi/api/auth.py); the token never
appears in a URL or a cookie. Every board response forbids framing, inline script, sniffing
and referrers."""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, make_response, redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError

from omoi.api import auth
from omoi.api import events as event_api
from omoi.api import tasks as task_api
from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.api.schemas.events import StreamQuery
from omoi.api.schemas.tasks import LogStreamQuery
from omoi.domain.auth import allows
from omoi.domain.enums import Phase, TaskStatus
from omoi.domain.events import EventType
from omoi.services import events, sessions
from omoi.services.read import agents as agent_views
from omoi.services.read import board, queries
from omoi.services.read import phases as phase_views

blp = Blueprint(
    "board",
    __name__,
    url_prefix="/board",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 150, 34, 60, 16, 12
# a board stream ends this soon and the browser reconnects (resuming by Last-Event-ID), so an
# ended session or a revoked token stops its streams within it
BOARD_STREAM_SECONDS = 60.0
SIGN_IN_COOKIE = "omoi_sign_in"  # the sign-in form's CSRF token, double-submitted
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    # not no-referrer: with it, browsers send the sign-in form's own post as Origin: null
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@blp.after_request
def protect(resp: Response) -> Response:
    """Board pages run no script but board.js, in no frame, and leak no address to others;
    signed-in pages stay out of shared caches."""
    resp.headers.update(HEADERS)
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def page(template: str, stream: dict[str, str], **context: Any) -> str:
    """The whole page, following the event stream from now on (filtered by ``stream``), or
    only its live region when the script asks for it."""
    if request.args.get("partial") == "1":
        return render_template(f"board/_{template}.html", statuses=list(TaskStatus), **context)
    query = urlencode({**stream, "after": events.latest_id(runtime().db)})
    return render_template(
        f"board/{template}.html",
        stream=f"{url_for('board.stream')}?{query}",
        event_types=[e.value for e in EventType],
        statuses=list(TaskStatus),
        **context,
    )


@blp.get("")
def index() -> str:
    cards = board.cards(runtime().db)
    columns = {
        phase.value: [c for c in cards if c["column"] == phase]
        for phase in Phase
        if phase != Phase.BLOCKED
    }
    return page("index", {}, columns=columns)


def layout(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns by dependency depth, rows in creation order: positions for an SVG drawing."""
    rows: dict[int, int] = {}
    at: dict[str, tuple[int, int]] = {}
    for node in nodes:
        row = rows.get(node["layer"], 0)
        rows[node["layer"]] = row + 1
        node["x"] = PAD + node["layer"] * (NODE_W + COL_GAP)
        node["y"] = PAD + row * (NODE_H + ROW_GAP)
        at[node["id"]] = (node["x"], node["y"])
    edges = [
        {
            "x1": at[d][0] + NODE_W,
            "y1": at[d][1] + NODE_H / 2,
            "x2": n["x"],
            "y2": n["y"] + NODE_H / 2,
        }
        for n in nodes
        for d in n["depends_on"]
        if d in at
    ]
    width = PAD * 2 + (max(rows, default=0) + 1) * (NODE_W + COL_GAP)
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + ROW_GAP)
    return {
        "nodes": nodes,
        "edges": edges,
        "width": width,
        "height": height,
        "w": NODE_W,
        "h": NODE_H,
    }


@blp.get("/tickets/<uuid:ticket_id>")
def ticket(ticket_id: uuid.UUID) -> str:
    db = runtime().db
    row, counts = queries.get_ticket(db, ticket_id)
    return page(
        "ticket",
        {"ticket_id": str(ticket_id)},
        ticket=row,
        counts=counts,
        progress=queries.progress(counts),
        history=phase_views.history_of(db, ticket_id),
        gate=phase_views.gate_status(db, runtime().uow.workflows, ticket_id),
        graph=layout(board.graph(db, ticket_id)),
    )


@blp.get("/agents")
def fleet() -> str:
    rt = runtime()
    rows = [
        (view, *agent_views.liveness(view.agent, rt.settings.heartbeat_timeout))
        for view in agent_views.list_agents(rt.db)
    ]
    return page("agents", {"type": "agent."}, agents=rows)


@blp.get("/stream")
def stream() -> Response:
    """The event stream the board's pages follow (the API's stream takes no board session),
    at most ``BOARD_STREAM_SECONDS`` long."""
    args = _query(StreamQuery())
    if isinstance(args, Response):
        return args
    filters = {k: args[k] for k in event_api.FILTERS if k in args}
    timeout = min(args["timeout"], BOARD_STREAM_SECONDS)
    return event_api.stream_response(filters, args.get("after"), timeout)


@blp.get("/tasks/<uuid:task_id>/logs/stream")
def task_logs(task_id: uuid.UUID) -> Response:
    """A task's log live, for the board's task panel, as ``/api/v1/tasks/{id}/logs/stream``
    sends it (``attempt``, ``after``; at most ``BOARD_STREAM_SECONDS``, then the browser
    reconnects, resuming by Last-Event-ID)."""
    args = _query(LogStreamQuery())
    if isinstance(args, Response):
        return args
    timeout = min(args["timeout"], BOARD_STREAM_SECONDS)
    return task_api.log_stream_response(task_id, args.get("attempt"), args["after"], timeout)


def _query(schema: Schema) -> dict[str, Any] | Response:
    """The query as ``schema`` loads it, or the 422 that says what was wrong (the board's
    routes are not the API's, whose arguments flask-smorest checks)."""
    try:
        return schema.load(request.args)  # type: ignore[no-any-return]
    except ValidationError as exc:
        details = {"query": exc.messages}
        return error_response(422, "unprocessable_entity", "request validation failed", details)


def _next(target: str | None) -> str:
    """Where to go after signing in: a board page, never another site."""
    if target and target.startswith("/board") and "\\" not in target:
        return target
    return url_for("board.index")


def _sign_in_page(error: str | None = None, status: int = 200) -> Response:
    """The form, with a fresh CSRF token that must come back in both field and cookie."""
    token = secrets.token_urlsafe(32)
    target = _next(request.values.get("next"))
    resp = make_response(
        render_template("board/login.html", csrf=token, next=target, error=error), status
    )
    resp.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path=url_for("board.login"),
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return resp


@blp.get("/login")
def login() -> Response:
    return _sign_in_page()


@blp.post("/login")
def sign_in() -> Response:
    """Swap a token with the ``read`` scope for a board session. The form's origin was checked
    (omoi/api/csrf.py); its CSRF token proves it is this server's form."""
    sent = request.form.get("csrf", "").encode()
    expected = request.cookies.get(SIGN_IN_COOKIE, "").encode()
    if not expected or not hmac.compare_digest(sent, expected):
        return _sign_in_page("the sign-in form expired; please try again", 403)
    wait = auth.stranger_wait()  # a token lookup: within the limit on strangers first
    if wait is not None:
        resp = _sign_in_page(f"too many failed sign-ins from here; retry in {wait} s", 429)
        resp.headers["Retry-After"] = str(wait)
        return resp
    rt = runtime()
    secret = request.form.get("token", "").strip()
    who = rt.authenticate(secret) if secret else None
    if who is None or not allows(who.scopes, auth.READ):
        auth.stranger_failed()
        return _sign_in_page("unknown or revoked token, or one without the read scope", 401)
    session = sessions.open_session(rt.db, who.token_id, rt.settings.board_session_lifetime)
    resp = redirect(_next(request.form.get("next")), 303)
    auth.set_session_cookie(resp, session)  # type: ignore[arg-type]
    resp.delete_cookie(SIGN_IN_COOKIE, path=url_for("board.login"))
    return resp  # type: ignore[return-value]


@blp.post("/logout")
def sign_out() -> Response:
    """End the browser's session here and in the database."""
    secret = request.cookies.get(auth.SESSION_COOKIE)
    if secret:
        sessions.close(runtime().db, secret)
    resp = redirect(url_for("board.login"), 303)
    auth.clear_session_cookie(resp)  # type: ignore[arg-type]
    return resp  # type: ignore[return-value]
