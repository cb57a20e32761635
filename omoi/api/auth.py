"""Bearer-token auth on every route but health and the OpenAPI document, and per-token rate
limits. Scopes: ``read`` for GETs, ``submit`` for work and control, ``agent`` for the
external-agent protocol and messaging; ``exec``, beside ``submit``, for tasks whose type runs
code; ``admin`` may do all. A non-admin token acts only as its own agent: the agent in the
path, the message sender and the holder of a reported task.

The web board's pages also take a board session (omoi/services/sessions.py): a cookie
scoped to ``/board`` that only reads board pages and the board's stream, whatever the token
may do. No API route reads a cookie, so a browser's ambient credentials reach none of them."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, current_app, g, redirect, request, url_for
from flask_limiter import Limiter
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.config import Settings
from omoi.domain.auth import Scope, allows, refused_exec_types
from omoi.persistence import actors
from omoi.services import sessions, tokens
from omoi.services.errors import Forbidden
from omoi.services.read import queries
from omoi.services.tokens import Authenticator, Principal

# the board's sign-in page, its form and sign-out are open (the forms check their origin;
# signing in counts against the limit on strangers, omoi/api/board.py)
BOARD_DOORS = {"board.static", "board.login", "board.sign_in", "board.sign_out"}
PUBLIC = {"health.healthz", "health.readyz", "api-docs.openapi_json", "static", *BOARD_DOORS}
# all a board session may do: read these, with GET
BOARD_STREAMS = {"board.stream", "board.task_logs"}
BOARD_READS = {"board.index", "board.ticket", "board.task", "board.fleet", *BOARD_STREAMS}
SESSION_COOKIE = "omoi_board"

READ = frozenset({Scope.READ})
SUBMIT = frozenset({Scope.SUBMIT})
AGENT = frozenset({Scope.AGENT})
AGENT_OR_SUBMIT = AGENT | SUBMIT

# (endpoint, method) -> scopes, where the default is read for GET and submit otherwise
SCOPES: dict[tuple[str, str], frozenset[Scope]] = {
    ("agents.Register", "POST"): AGENT,
    ("agents.Heartbeat", "POST"): AGENT,
    ("agents.Claim", "POST"): AGENT,
    ("agents.Claims", "POST"): AGENT,
    ("tasks.CompleteTask", "POST"): AGENT,
    ("tasks.FailTask", "POST"): AGENT,
    ("tasks.TaskLogs", "POST"): AGENT,
    ("messages.Messages", "POST"): AGENT_OR_SUBMIT,
    ("messages.AgentInbox", "POST"): AGENT_OR_SUBMIT,
    ("messages.AgentInbox", "GET"): AGENT,
    ("messages.MarkRead", "POST"): AGENT,
    ("tickets.Artifacts", "POST"): AGENT_OR_SUBMIT,
}
# endpoints where the agent acted as is the one in the path (others name it elsewhere)
PATH_AGENT = {"agents.Heartbeat", "agents.Claim", "agents.Claims", "messages.MarkRead"}
TASK_HOLDER = {"tasks.CompleteTask", "tasks.FailTask", "tasks.TaskLogs"}  # their POSTs
SENDER = {"messages.Messages", "messages.AgentInbox"}


def needed(endpoint: str, method: str) -> frozenset[Scope]:
    default = READ if method in ("GET", "HEAD") else SUBMIT
    return SCOPES.get((endpoint, method), default)


def _secret() -> str | None:
    """The bearer token; never a cookie."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _acting_agents(endpoint: str) -> list[uuid.UUID | None]:
    """The agent this request acts as (none listed when it names none)."""
    args = request.view_args or {}
    if endpoint in PATH_AGENT or (endpoint == "messages.AgentInbox" and request.method == "GET"):
        return [args["agent_id"]]
    if endpoint in TASK_HOLDER and request.method == "POST":
        return [queries.task_holder(runtime().db, args["task_id"])]
    if endpoint in SENDER:
        body = request.get_json(silent=True)
        sender = body.get("from_agent") if isinstance(body, dict) else None
        try:
            return [uuid.UUID(str(sender))] if sender else []
        except ValueError:
            return []  # the schema reports the bad value
    return []


def _denied(status: int, code: str, message: str) -> Response:
    resp = error_response(status, code, message)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="omoi"'
    return resp


class Strangers:
    """The rate limit on requests without a valid token, per client address, checked before
    the token lookup: a flood of wrong tokens costs a counter, not a database query each.
    Shared by every API process when Redis is the broker; a storage outage lets them through
    (the per-token limit's rule: the broker must not take the API down)."""

    def __init__(self, storage_uri: str, limit: str) -> None:
        self.limit = parse(limit)
        self.window = FixedWindowRateLimiter(storage_from_string(storage_uri))

    def retry_after(self, address: str) -> int | None:
        """Seconds until this address may try again (at least 1), or None if it may now."""
        try:
            if self.window.test(self.limit, "strangers", address):
                return None
            reset = self.window.get_window_stats(self.limit, "strangers", address).reset_time
        except Exception:  # see the class docstring
            return None
        return max(1, math.ceil(reset - time.time()))

    def failed(self, address: str) -> None:
        with contextlib.suppress(Exception):  # see the class docstring
            self.window.hit(self.limit, "strangers", address)


def stranger_wait() -> int | None:
    """Seconds this client address must wait, having failed too often (None: it may try)."""
    strangers: Strangers | None = current_app.extensions.get("omoi.strangers")
    return strangers.retry_after(request.remote_addr or "unknown") if strangers else None


def stranger_failed() -> None:
    """Count a failed token or session lookup against this client address."""
    strangers: Strangers | None = current_app.extensions.get("omoi.strangers")
    if strangers:
        strangers.failed(request.remote_addr or "unknown")


def _too_many() -> Response | None:
    wait = stranger_wait()
    if wait is None:
        return None
    resp = _denied(429, "too_many_requests", "too many requests without a valid token")
    resp.headers["Retry-After"] = str(wait)
    return resp


def check(authenticate: Authenticator) -> Response | None:
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC or request.method == "OPTIONS":
        return None  # 404/405 are answered as such
    secret = _secret()
    if secret is None and endpoint in BOARD_READS:
        return _board_session()
    who = authenticate.cached(secret) if secret else None
    if who is None:
        refused = _too_many()
        if refused is not None:
            return refused
        who = authenticate(secret) if secret else None
        if who is None:
            stranger_failed()
            return _denied(401, "unauthorized", "a valid bearer token is required")
    g.principal = who
    actors.bind(actors.Actor(who.token_id, who.name))  # the events this request writes name it
    if not allows(who.scopes, needed(endpoint, request.method)):
        scopes = ", ".join(sorted(needed(endpoint, request.method)))
        return _denied(403, "forbidden", f"this token lacks the scope for this route ({scopes})")
    if Scope.ADMIN not in who.scopes and any(
        agent != who.agent_id for agent in _acting_agents(endpoint)
    ):
        return _denied(403, "forbidden", "this token may act only as its own agent")
    return None


def _board_session() -> Response | None:
    """A board read by a signed-in browser, or (without a live session) the sign-in page.
    A session id is looked up only within the limit on strangers, like a token."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        refused = _too_many()
        if refused is not None:
            return refused
        who = sessions.principal(runtime().db, secret)
        if who is not None and request.method in ("GET", "HEAD") and allows(who.scopes, READ):
            g.principal = who
            return None
        stranger_failed()
    back = "/board" if request.endpoint in BOARD_STREAMS else request.path
    resp = redirect(url_for("board.login", next=back))
    if secret:
        clear_session_cookie(resp)  # type: ignore[arg-type]
    return resp  # type: ignore[return-value]


def set_session_cookie(resp: Response, secret: str) -> None:
    """The board session's cookie: sent only to the board, never to scripts or other sites,
    only over TLS when the request came over TLS (see ``OMOI_TRUSTED_PROXIES``)."""
    resp.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(runtime().settings.board_session_lifetime),
        path="/board",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )


def clear_session_cookie(resp: Response) -> None:
    resp.delete_cookie(
        SESSION_COOKIE, path="/board", secure=request.is_secure, httponly=True, samesite="Strict"
    )


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


def require_exec(task_types: Iterable[str]) -> None:
    """Refuse (403) a submission of exec-type tasks by a token without ``exec``: whoever
    submits one chooses the code a worker runs."""
    refused = refused_exec_types(principal().scopes, task_types, runtime().settings.exec_types)
    if refused:
        raise Forbidden(
            f"task type {refused[0]!r} runs code: submitting it needs the exec scope",
            {"task_types": refused},
        )


def bind_registered_agent(agent_id: uuid.UUID) -> None:
    """An agent-scoped (non-admin) token that registers an agent becomes that agent's."""
    who = principal()
    if Scope.ADMIN in who.scopes:
        return
    tokens.bind_agent(runtime().db, who.token_id, agent_id)
    runtime().authenticate.forget(_secret() or "")


def _rate_key() -> str:
    who: Any = g.get("principal")
    return f"token:{who.token_id}" if who is not None else f"addr:{request.remote_addr}"


def _retry_after(resp: Response) -> Response:
    """flask-limiter truncates the wait (``Retry-After: 0`` in a window's last second) and sets
    it on every response; it means something only on a 429 (then at least 1) or a 503 (an
    outage's own wait)."""
    if resp.status_code == 429:
        wait = resp.headers.get("Retry-After", "")
        if not wait.isdigit() or int(wait) < 1:
            reset = float(resp.headers.get("X-RateLimit-Reset", 0))
            resp.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
    elif resp.status_code not in (429, 503):
        resp.headers.pop("Retry-After", None)
    return resp


def register(app: Flask, authenticate: Authenticator, settings: Settings) -> None:
    # shared by every API process when Redis is the broker; per process otherwise
    storage_uri = (
        settings.broker_url
        if settings.broker_url.startswith(("redis://", "rediss://"))
        else "memory://"
    )
    if settings.unauthenticated_rate_limit:
        app.extensions["omoi.strangers"] = Strangers(
            storage_uri, settings.unauthenticated_rate_limit
        )
    app.before_request(lambda: check(authenticate))
    app.after_request(_retry_after)  # registered first, so it runs after flask-limiter's
    # this thread or greenlet serves other requests next, some with no token
    app.teardown_request(lambda _exc: actors.bind(None))
    if settings.rate_limit:
        Limiter(
            _rate_key,
            app=app,
            default_limits=[settings.rate_limit],
            storage_uri=storage_uri,
            headers_enabled=True,
            swallow_errors=True,  # a broker outage must not take the API down with it
            default_limits_exempt_when=lambda: request.endpoint in PUBLIC,
        )
