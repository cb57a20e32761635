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
from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from marshmallow import EXCLUDE, Schema, ValidationError

from omoi.api import auth
from omoi.api import events as event_api
from omoi.api import tasks as task_api
from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.api.schemas.board import (
    NOTHING,
    BoardQuery,
    FleetQuery,
    PageQuery,
    TaskPanelOut,
    TicketQuery,
)
from omoi.api.schemas.events import StreamQuery
from omoi.api.schemas.tasks import LogStreamQuery
from omoi.domain import gates, layout
from omoi.domain.auth import allows
from omoi.domain.enums import PHASE_DONE, TaskStatus
from omoi.domain.events import EventType
from omoi.domain.progress import TicketState, board_columns
from omoi.domain.workflow import current_phase
from omoi.persistence.types import utcnow
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

# a ticket with more tasks than this shows only the phase it is in, the others collapsed
BIG_GRAPH = 300
FINISHED_SHOWN = 6  # the newest done (and cancelled) cards the board shows by default
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
# what each ticket state and task status looks like besides its colour, for eyes that do
# not tell colours apart
STATE_ICONS = {
    TicketState.ACTIVE: "▶",
    TicketState.AWAITING_APPROVAL: "⚑",
    TicketState.FAILED: "✖",
    TicketState.BLOCKED: "⚠",
    TicketState.DONE: "✔",
    TicketState.CANCELLED: "⊘",
}
STATUS_ICONS = {
    TaskStatus.PENDING: "…",
    TaskStatus.QUEUED: "◷",
    TaskStatus.RUNNING: "▶",
    TaskStatus.RETRYING: "↻",
    TaskStatus.SUCCEEDED: "✔",
    TaskStatus.FAILED: "✖",
    TaskStatus.CANCELLED: "⊘",
}


class BadQuery(Exception):
    """A page's query failed its schema: 422 with the field messages, like the API's."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages


@blp.errorhandler(BadQuery)
def bad_query(exc: BadQuery) -> Response:
    details = {"query": exc.messages}
    return error_response(422, "unprocessable_entity", "request validation failed", details)


@blp.after_request
def protect(resp: Response) -> Response:
    """Board pages run no script but board.js, in no frame, and leak no address to others;
    signed-in pages stay out of shared caches."""
    resp.headers.update(HEADERS)
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@blp.app_template_filter("phase")
def phase_name(value: str | None) -> str:
    """``PHASE_IMPLEMENTATION`` as a person says it: ``implementation``."""
    return (value or "-").removeprefix("PHASE_").lower().replace("_", " ")


@blp.app_template_filter("words")
def words(value: str) -> str:
    return value.replace("_", " ")


@blp.app_template_filter("duration")
def duration(seconds: float) -> str:
    """A span of time in the unit a person would use: ``45 s``, ``20 min``, ``3 h``, ``2 d``."""
    for unit, size, up_to in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"


def query(schema: Schema) -> dict[str, Any]:
    try:
        return schema.load(request.args)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise BadQuery(exc.messages) from exc


def page(template: str, stream: dict[str, str], **context: Any) -> str:
    """The whole page, following the event stream from now on (filtered by ``stream``), or
    only its live region when the script asks for it (with the same query)."""
    common = {
        "statuses": list(TaskStatus),
        "state_icons": STATE_ICONS,
        "status_icons": STATUS_ICONS,
        **context,
    }
    if query(PageQuery(unknown=EXCLUDE)).get("partial"):
        return render_template(f"board/_{template}.html", **common)
    after = urlencode({**stream, "after": events.latest_id(runtime().db)})
    args = {**request.args.to_dict(), "partial": "1"}
    return render_template(
        f"board/{template}.html",
        stream=f"{url_for('board.stream')}?{after}",
        partial_url=f"{request.path}?{urlencode(args)}",
        event_types=[e.value for e in EventType],
        **common,
    )


def _phases_of() -> dict[str, list[str]]:
    return {w.name: w.names for w in runtime().uow.workflows.all()}


def _columns(cards: list[dict[str, Any]], workflow: str | None) -> dict[str, list[Any]]:
    """The board's columns and their cards: the phases of the workflows in use (those of the
    cards shown and the one filtered on; every known one on an empty board), DONE last."""
    phases_of = _phases_of()
    in_use = {c["workflow"] for c in cards} | ({workflow} if workflow else set())
    orders = [phases_of[w] for w in sorted(in_use) if w in phases_of] or phases_of.values()
    names = board_columns(orders, extra=[c["column"] for c in cards])
    return {phase: [c for c in cards if c["column"] == phase] for phase in names}


@blp.get("")
def index() -> str:
    args = query(BoardQuery())
    state = TicketState(args["state"]) if "state" in args else None
    found = board.board(
        runtime().db,
        _phases_of(),
        text=args.get("q"),
        state=state,
        workflow=args.get("workflow"),
        finished_shown=None if args.get("finished") == "all" else FINISHED_SHOWN,
    )
    return page(
        "index",
        {},
        columns=_columns(found.cards, args.get("workflow")),
        finished=found.finished,
        filters={k: v for k, v in args.items() if k != "partial"},
        states=list(TicketState),
        workflows=sorted(_phases_of()),
    )


def graph_view(
    nodes: list[dict[str, Any]], order: list[str], collapsed: set[str]
) -> dict[str, Any]:
    """The drawing of a ticket's tasks (omoi/domain/layout.py), as the SVG template reads it:
    boxes with their task, collapsed phases with their counts, edges as SVG paths."""
    drawing = layout.layout(
        [layout.Node(n["id"], n["phase"], tuple(n["depends_on"])) for n in nodes],
        order,
        collapsed,
    )
    task = {n["id"]: n for n in nodes}
    counts = {g: Counter(n["status"] for n in nodes if n["phase"] == g) for g in collapsed}
    return {
        "nodes": [{**task[b.id], "box": b} for b in drawing.boxes if not b.summary],
        "summaries": [
            {"box": b, "counts": sorted(counts[b.group].items())}
            for b in drawing.boxes
            if b.summary
        ],
        "edges": [
            {
                "source": r.source,
                "target": r.target,
                "d": "M" + " L".join(f"{x:g},{y:g}" for x, y in r.points),
            }
            for r in drawing.routes
        ],
        "bands": drawing.bands,
        "width": drawing.width,
        "height": drawing.height,
        "label_y": layout.PAD + layout.LABEL_H / 2,
    }


def _check_collapse(asked: list[str], phases: list[str]) -> None:
    """A ticket page collapses only phases its workflow has (or its tasks are in), each once."""
    unknown = sorted(set(asked) - set(phases))
    if unknown:
        raise BadQuery({"collapse": [f"not a phase of this ticket: {', '.join(unknown)}"]})
    if len(asked) > len(set(asked)):
        raise BadQuery({"collapse": ["names a phase more than once"]})


def _toggle(ticket_id: uuid.UUID, collapsed: set[str], phase: str) -> str:
    """The page's address with ``phase`` collapsed or expanded."""
    after = sorted(collapsed ^ {phase})
    return url_for("board.ticket", ticket_id=ticket_id, collapse=",".join(after) or NOTHING)


@blp.get("/tickets/<uuid:ticket_id>")
def ticket(ticket_id: uuid.UUID) -> str:
    args = query(TicketQuery())
    db = runtime().db
    row, counts = queries.get_ticket(db, ticket_id)
    workflow = runtime().uow.workflows.find(row.workflow)
    order = workflow.names if workflow else []
    nodes = board.graph(db, ticket_id)
    present = {n["phase"] for n in nodes}
    current = current_phase(row)
    if "collapse" in args:
        collapsed = set(args["collapse"]) - {NOTHING}
        _check_collapse(args["collapse"], [*order, *sorted(present - set(order)), NOTHING])
    else:
        collapsed = present - {current} if len(nodes) > BIG_GRAPH else set()
    gate = phase_views.gate_status(db, runtime().uow.workflows, ticket_id)
    spec = workflow.spec(gate["phase"]) if workflow and gate["phase"] in workflow.working else None
    return page(
        "ticket",
        {"ticket_id": str(ticket_id)},
        ticket=row,
        counts=counts,
        standing=board.standing(db, row, _phases_of()),
        steps=[p for p in order if p != PHASE_DONE],
        current=current,
        history=phase_views.history_of(db, ticket_id),
        gate=gate,
        requires=gates.describe(spec.gate) if spec else [],
        graph=graph_view(nodes, order, collapsed & present),
        toggles={p: _toggle(ticket_id, collapsed, p) for p in present},
    )


@blp.get("/tasks/<uuid:task_id>")
def task(task_id: uuid.UUID) -> Response:
    """The task panel's data, for the script (the board session reads it like a page)."""
    rt = runtime()
    return jsonify(TaskPanelOut().dump(board.task_panel(rt.db, task_id, rt.settings.exec_types)))


@blp.get("/agents")
def fleet() -> str:
    args = query(FleetQuery())
    rt = runtime()
    hide_after = rt.settings.board_hide_offline_after
    since = None if args.get("all") else utcnow() - timedelta(seconds=hide_after)
    rows = [
        (view, *agent_views.liveness(view.agent, rt.settings.heartbeat_timeout))
        for view in agent_views.list_agents(rt.db, heard_since=since)
    ]
    hidden = agent_views.count_quiet(rt.db, since) if since else 0
    return page(
        "agents",
        {"type": "agent."},
        agents=rows,
        hidden=hidden,
        hide_after=hide_after,
    )


@blp.get("/stream")
def stream() -> Response:
    """The event stream the board's pages follow (the API's stream takes no board session),
    at most ``BOARD_STREAM_SECONDS`` long."""
    args = query(StreamQuery())
    filters = {k: args[k] for k in event_api.FILTERS if k in args}
    timeout = min(args["timeout"], BOARD_STREAM_SECONDS)
    return event_api.stream_response(filters, args.get("after"), timeout)


@blp.get("/tasks/<uuid:task_id>/logs/stream")
def task_logs(task_id: uuid.UUID) -> Response:
    """A task's log live, for the board's task panel, as ``/api/v1/tasks/{id}/logs/stream``
    sends it (``attempt``, ``after``; at most ``BOARD_STREAM_SECONDS``, then the browser
    reconnects, resuming by Last-Event-ID)."""
    args = query(LogStreamQuery())
    timeout = min(args["timeout"], BOARD_STREAM_SECONDS)
    return task_api.log_stream_response(task_id, args.get("attempt"), args["after"], timeout)


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
