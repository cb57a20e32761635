"""Bearer-token auth on every route but health and the OpenAPI document, and per-token rate
limits. Scopes: ``read`` for GETs, ``submit`` for work and control, ``agent`` for the
external-agent protocol and messaging; ``admin`` may do all. A non-admin token acts only as
its own agent: the agent in the path, the message sender and the holder of a reported task."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, redirect, request
from flask_limiter import Limiter

from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.config import Settings
from omoi.domain.auth import Scope, allows
from omoi.services import actors, queries, tokens
from omoi.services.tokens import Authenticator, Principal

PUBLIC = {"health.healthz", "health.readyz", "api-docs.openapi_json", "static"}
COOKIE = "omoi_token"

READ = frozenset({Scope.READ})
SUBMIT = frozenset({Scope.SUBMIT})
AGENT = frozenset({Scope.AGENT})
AGENT_OR_SUBMIT = AGENT | SUBMIT

# (endpoint, method) -> scopes, where the default is read for GET and submit otherwise
SCOPES: dict[tuple[str, str], frozenset[Scope]] = {
    ("agents.Register", "POST"): AGENT,
    ("agents.Heartbeat", "POST"): AGENT,
    ("agents.Claim", "POST"): AGENT,
    ("tasks.CompleteTask", "POST"): AGENT,
    ("tasks.FailTask", "POST"): AGENT,
    ("messages.Messages", "POST"): AGENT_OR_SUBMIT,
    ("messages.AgentInbox", "POST"): AGENT_OR_SUBMIT,
    ("messages.AgentInbox", "GET"): AGENT,
    ("messages.MarkRead", "POST"): AGENT,
    ("tickets.Artifacts", "POST"): AGENT_OR_SUBMIT,
}
# endpoints where the agent acted as is the one in the path (others name it elsewhere)
PATH_AGENT = {"agents.Heartbeat", "agents.Claim", "messages.MarkRead"}
TASK_HOLDER = {"tasks.CompleteTask", "tasks.FailTask"}
SENDER = {"messages.Messages", "messages.AgentInbox"}


def needed(endpoint: str, method: str) -> frozenset[Scope]:
    default = READ if method in ("GET", "HEAD") else SUBMIT
    return SCOPES.get((endpoint, method), default)


def _secret() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


def _acting_agents(endpoint: str) -> list[uuid.UUID | None]:
    """The agent this request acts as (none listed when it names none)."""
    args = request.view_args or {}
    if endpoint in PATH_AGENT or (endpoint == "messages.AgentInbox" and request.method == "GET"):
        return [args["agent_id"]]
    if endpoint in TASK_HOLDER:
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


def check(authenticate: Authenticator) -> Response | None:
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC or request.method == "OPTIONS":
        return None  # 404/405 are answered as such
    login = request.method == "GET" and endpoint.startswith("board") and "token" in request.args
    secret = request.args["token"] if login else _secret()
    who = authenticate(secret) if secret else None
    if who is None:
        return _denied(401, "unauthorized", "a valid bearer token is required")
    g.principal = who
    actors.bind(actors.Actor(who.token_id, who.name))  # the events this request writes name it
    if login:
        return _login(secret)  # type: ignore[arg-type]
    if not allows(who.scopes, needed(endpoint, request.method)):
        scopes = ", ".join(sorted(needed(endpoint, request.method)))
        return _denied(403, "forbidden", f"this token lacks the scope for this route ({scopes})")
    if Scope.ADMIN not in who.scopes and any(
        agent != who.agent_id for agent in _acting_agents(endpoint)
    ):
        return _denied(403, "forbidden", "this token may act only as its own agent")
    return None


def _login(secret: str) -> Response:
    """``/board?token=…`` keeps the token in an HttpOnly cookie and drops it from the URL."""
    query = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "token"])
    target = request.path + (f"?{query}" if query else "")
    resp = redirect(target)
    resp.set_cookie(COOKIE, secret, httponly=True, samesite="Strict")
    return resp  # type: ignore[return-value]


def principal() -> Principal:
    return g.principal  # type: ignore[no-any-return]


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


def register(app: Flask, authenticate: Authenticator, settings: Settings) -> None:
    app.before_request(lambda: check(authenticate))
    # this thread or greenlet serves other requests next, some with no token
    app.teardown_request(lambda _exc: actors.bind(None))
    if settings.rate_limit:
        Limiter(
            _rate_key,
            app=app,
            default_limits=[settings.rate_limit],
            # shared by every API process when Redis is the broker; per process otherwise
            storage_uri=settings.broker_url
            if settings.broker_url.startswith(("redis://", "rediss://"))
            else "memory://",
            headers_enabled=True,
            swallow_errors=True,  # a broker outage must not take the API down with it
            default_limits_exempt_when=lambda: request.endpoint in PUBLIC,
        )
