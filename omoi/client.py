"""A small, typed, synchronous client of omoi's HTTP API, on urllib3: tickets (their phases,
artifacts, approvals and context), tasks and their logs, agents (discovery, health, and the
pull protocol an external agent speaks), messages, locks, workflows, events (a page, or the
live stream as an iterator) and the server's liveness and readiness.

It speaks HTTP only (a contract forbids it the database, the services and Celery), so any
program can drive omoi with it; the ``omoi`` CLI is built on it. Every answer the API gives
with an error status becomes an ``ApiError`` carrying the API's ``error.code``, ``message``
and ``details``; an API that cannot be reached (refused, unresolvable, timed out, cut off
mid-answer) becomes an ``ApiUnreachable`` naming the URL it tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import quote, urlencode

import urllib3

from omoi.config import Settings
from omoi.domain.canvas import compile_canvas
from omoi.domain.enums import TaskStatus, TicketStatus
from omoi.domain.events import EventType

STREAM_READ_TIMEOUT = 60.0  # the API sends a keep-alive every 15 s on a quiet stream
JsonObject = dict[str, Any]


class Claim(TypedDict):
    """What ``claim`` hands an external agent: the task, and the ``lease_token`` it reports
    (logs, complete, fail) with."""

    task_id: str
    ticket_id: str
    key: str
    task_type: str
    attempt: int
    idempotency_key: str  # the same for every attempt: a dedupe key for the task's effect
    lease_token: str
    payload: JsonObject
    timeout_seconds: float | None
    dependency_results: JsonObject
    ticket_context: JsonObject


class ApiError(Exception):
    """The API answered with an error status: its ``{"error": {code, message, details}}``."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


class ApiUnreachable(Exception):
    """No answer from the API at ``url``: ``reason`` says why (refused, timed out, …)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the API at {url}: {reason}")
        self.url = url
        self.reason = reason


def saved_token(settings: Settings) -> str:
    """``OMOI_TOKEN``, else the local token ``omoi up`` saved in the data directory."""
    saved = settings.token_file
    return settings.token or (saved.read_text().strip() if saved.is_file() else "")


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The cause in a few words: the operating system's (``Connection refused``), else
    urllib3's."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return str(cause.strerror)
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return str(exc)


def _error(status: int, raw: bytes) -> ApiError:
    """The API's error body, or (a proxy's page, a server that is not omoi) the status alone."""
    try:
        body = json.loads(raw)
        err = body["error"]
        return ApiError(status, str(err["code"]), str(err["message"]), err.get("details") or {})
    except (ValueError, TypeError, KeyError):
        text = raw.decode(errors="replace").strip().splitlines()
        return ApiError(status, f"http_{status}", text[0][:200] if text else "no error body")


def _sse(lines: Iterator[bytes]) -> Iterator[JsonObject]:
    """The ``data:`` of each Server-Sent Event, decoded (comments and ids skipped)."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[len("data:") :].removeprefix(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def ends_ticket(event: Mapping[str, Any]) -> bool:
    """Whether the event may be the one that ended its ticket's walk: completed, cancelled,
    or moved to a phase that leaves it inactive (``PHASE_BLOCKED``)."""
    kind = event["type"]
    return kind in (EventType.TICKET_COMPLETED, EventType.TICKET_CANCELLED) or (
        kind == EventType.TICKET_PHASE_CHANGED
        and event["payload"].get("status") != TicketStatus.ACTIVE  # what the move left it
    )


@dataclass
class Client:
    """One API at ``url`` with one bearer ``token``; ``timeout`` bounds each request."""

    url: str
    token: str = ""
    timeout: float = 30.0
    _pool: urllib3.PoolManager = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        # a stream holds a connection while ``ticket_events`` asks the API between its events
        self._pool = urllib3.PoolManager(retries=False, maxsize=2)

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """The API of ``OMOI_API_URL`` (else ``OMOI_API_HOST``:``OMOI_API_PORT``) with the token
        the CLI sends (``saved_token``)."""
        return cls(settings.client_url, saved_token(settings))

    # -- the transport ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        stream: bool = False,
        accept: Collection[int] = (),
        held: float = 0.0,
    ) -> urllib3.BaseHTTPResponse:
        """The answer; an error status raises ``ApiError`` unless ``accept`` lists it.
        ``held``: seconds the API may hold the answer on purpose (a long poll), on top of
        the timeout."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        head = {"Accept": "application/json", **(headers or {})}
        if self.token:
            head["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            head["Content-Type"] = "application/json"
        read = STREAM_READ_TIMEOUT if stream else self.timeout + held
        try:
            resp = self._pool.request(
                method,
                url,
                body=json.dumps(body, allow_nan=False).encode() if body is not None else None,
                headers=head,
                timeout=urllib3.Timeout(connect=min(self.timeout, 10.0), read=read),
                preload_content=not stream,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ApiUnreachable(self.url, _reason(exc)) from exc
        if resp.status >= 400 and resp.status not in accept:
            raise _error(resp.status, resp.data)
        return resp

    def _json(self, method: str, path: str, params: Any = None, body: Any = None, **kw: Any) -> Any:
        resp = self._send(method, path, params, body, **kw)
        if resp.status == 204:
            return None
        try:
            return json.loads(resp.data)
        except ValueError as exc:
            raise ApiError(resp.status, "not_json", f"the answer at {path} is not JSON") from exc

    def _items(
        self, path: str, params: dict[str, Any], limit: int | None, cursor: str = "cursor"
    ) -> list[JsonObject]:
        """Up to ``limit`` items (None: all), following ``next_cursor`` page after page."""
        found: list[JsonObject] = []
        while True:
            page = self._json("GET", path, params)
            found.extend(page["items"])
            if page["next_cursor"] is None or (limit is not None and len(found) >= limit):
                return found[:limit]
            params = {**params, cursor: page["next_cursor"]}

    # -- tickets ---------------------------------------------------------------------------

    def submit(self, ticket: Mapping[str, Any], idempotency_key: str | None = None) -> JsonObject:
        """Create a ticket and its tasks: the ticket with ``tasks: [{id, key, status}]``."""
        key = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/api/v1/tickets", body=dict(ticket), headers=key)

    def submit_canvas(
        self,
        canvas: Any,
        title: str,
        *,
        capabilities: list[str] | None = None,
        idempotency_key: str | None = None,
        **ticket: Any,
    ) -> CanvasResult:
        """Run a Celery canvas (``chain``, ``group``, ``chord`` of your Celery app's task
        signatures, nested) as one ticket with Celery's argument passing, on workers started
        with ``--celery-app``; ``capabilities`` route its tasks, ``ticket`` adds ticket fields
        (``description``, ``priority``). An argument that is not JSON raises
        ``omoi.domain.canvas.CanvasError`` naming it, before any request."""
        compiled = compile_canvas(canvas, title, capabilities=capabilities, **ticket)
        made = self.submit(compiled.ticket, idempotency_key)
        return CanvasResult(self, made["id"], compiled.result_key)

    def ticket(self, ticket_id: str) -> JsonObject:
        """One ticket with its ``task_counts`` per status and ``progress``."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}")

    def tickets(
        self,
        *,
        status: str | None = None,
        phase: str | None = None,
        workflow: str | None = None,
        limit: int | None = 50,
    ) -> list[JsonObject]:
        """Newest first."""
        params = {"status": status, "phase": phase, "workflow": workflow, "limit": _page(limit)}
        return self._items("/api/v1/tickets", params, limit)

    def phase_progress(self, ticket_id: str) -> list[JsonObject]:
        """Task counts and progress per phase, in workflow order."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/phase-progress")["items"]

    def gate_status(self, ticket_id: str) -> JsonObject:
        """What the current phase's gate ``requires`` and its ``latest`` judgement."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/gate-status")

    def valid_transitions(self, ticket_id: str) -> JsonObject:
        """The ticket's ``phase``, ``status`` and the phases it may be moved to (``allowed``)."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/valid-transitions")

    def phase_history(self, ticket_id: str) -> list[JsonObject]:
        """Every move of the ticket, oldest first: ``from_phase``, ``to_phase``, ``reason``,
        ``by`` (the token or the gate)."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/phase-history")["items"]

    def transition(
        self, ticket_id: str, to_phase: str, reason: str | None = None, *, force: bool = False
    ) -> JsonObject:
        """Move the ticket to ``to_phase`` (``force`` skips the workflow's transitions); the
        ticket as it is now. A move the workflow does not allow is a 409 naming those it does."""
        body = _given(to_phase=to_phase, reason=reason, force=force)
        return self._json("POST", f"/api/v1/tickets/{quote(ticket_id)}/transition", body=body)

    def context(self, ticket_id: str) -> JsonObject:
        """What the ticket's finished phases handed on: ``phases`` and their ``summary``."""
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/context")

    def artifacts(
        self, ticket_id: str, *, phase: str | None = None, limit: int | None = None
    ) -> list[JsonObject]:
        """The ticket's artifacts (of ``phase``, else all), oldest first: ``id``, ``phase``,
        ``type``, ``path``, ``content``, the ``task_id`` that produced it."""
        params = {"phase": phase, "limit": _page(limit)}
        return self._items(f"/api/v1/tickets/{quote(ticket_id)}/artifacts", params, limit, "after")

    def add_artifact(
        self,
        ticket_id: str,
        type: str,
        content: Any,
        *,
        path: str | None = None,
        phase: str | None = None,
    ) -> int:
        """Add an artifact to ``phase`` (default: the ticket's, or the one it is blocked in);
        a gate waiting for it is judged again. Its id."""
        body = {"type": type, "content": content, **_given(path=path, phase=phase)}
        created = self._json("POST", f"/api/v1/tickets/{quote(ticket_id)}/artifacts", body=body)
        return int(created["id"])

    def cancel_ticket(self, ticket_id: str, reason: str | None = None) -> JsonObject:
        """Cancel the ticket and its open tasks; the ticket as it is now."""
        body = _given(reason=reason or None)
        return self._json("POST", f"/api/v1/tickets/{quote(ticket_id)}/cancel", body=body)

    def approve(self, ticket_id: str, comment: str = "", phase: str | None = None) -> JsonObject:
        """Approve the gate of ``phase`` (default: the phase the ticket is in, or was blocked
        in); the approver recorded is this client's token."""
        body = _given(comment=comment, phase=phase)
        return self._json("POST", f"/api/v1/tickets/{quote(ticket_id)}/approve", body=body)

    def workflows(self) -> list[JsonObject]:
        """Each workflow this deployment knows: its name, phases and transitions."""
        return self._json("GET", "/api/v1/workflows")["items"]

    # -- tasks -----------------------------------------------------------------------------

    def task(self, task_id: str) -> JsonObject:
        """One task with its ``attempts``, ``error``, ``result`` and event ``timeline``."""
        return self._json("GET", f"/api/v1/tasks/{quote(task_id)}")

    def tasks(
        self,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        newest_first: bool = False,
        limit: int | None = 100,
    ) -> list[JsonObject]:
        params = {
            "ticket_id": ticket_id,
            "status": status,
            "order": "newest" if newest_first else None,
            "limit": _page(limit),
        }
        return self._items("/api/v1/tasks", params, limit)

    def cancel_task(self, task_id: str, reason: str | None = None) -> JsonObject:
        """Cancel a task and its dependents; the task as it is now."""
        body = _given(reason=reason or None)
        return self._json("POST", f"/api/v1/tasks/{quote(task_id)}/cancel", body=body)

    def retry_task(self, task_id: str) -> JsonObject:
        """Re-run a failed task with a fresh retry budget; the task as it is now."""
        return self._json("POST", f"/api/v1/tasks/{quote(task_id)}/retry")

    def logs(
        self, task_id: str, *, attempt: int | None = None, after: int = 0, limit: int = 1000
    ) -> JsonObject:
        """One page of an attempt's log (the latest attempt's when ``attempt`` is None): its
        ``lines`` after sequence number ``after``, ``next_after`` and ``truncated``."""
        params = {"attempt": attempt, "after": after, "limit": limit}
        return self._json("GET", f"/api/v1/tasks/{quote(task_id)}/logs", params)  # type: ignore[no-any-return]

    def follow_logs(
        self, task_id: str, *, attempt: int | None = None, timeout: float = 3600.0
    ) -> Iterator[JsonObject]:
        """An attempt's log lines as they are written, from its first, then one
        ``{"task_id", "attempt", "status", "truncated"}`` when the attempt has ended (nothing
        more if ``timeout`` passes first)."""
        params = {"attempt": attempt, "timeout": timeout}
        resp = self._send("GET", f"/api/v1/tasks/{quote(task_id)}/logs/stream", params, stream=True)
        try:
            yield from _sse(iter(resp))
        except urllib3.exceptions.HTTPError as exc:
            raise ApiUnreachable(self.url, _reason(exc)) from exc
        finally:
            resp.close()

    # -- agents ----------------------------------------------------------------------------

    def agents(
        self, capability: str | None = None, *, status: str | None = None, kind: str | None = None
    ) -> list[JsonObject]:
        """Agents, newest first, each with ``running_tasks`` and ``free_capacity``."""
        params = {"capability": capability, "status": status, "kind": kind}
        return self._json("GET", "/api/v1/agents", params)["items"]

    def agent(self, agent_id: str) -> JsonObject:
        return self._json("GET", f"/api/v1/agents/{quote(agent_id)}")

    def agent_health(self, agent_id: str) -> JsonObject:
        """Whether the agent is ``healthy``, its ``seconds_since_heartbeat`` and capacity."""
        return self._json("GET", f"/api/v1/agents/{quote(agent_id)}/health")

    def best_fit(self, capabilities: Iterable[str]) -> JsonObject | None:
        """The agent covering most of ``capabilities``, then idle, healthy, with room; None
        when no agent has any of them."""
        try:
            return self._json(
                "GET", "/api/v1/agents/best-fit", {"capabilities": ",".join(capabilities)}
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def stale(self) -> list[JsonObject]:
        """Agents that stopped heartbeating (marked stale, or overdue)."""
        return self._json("GET", "/api/v1/agents/stale")["items"]

    def agent_stats(self) -> JsonObject:
        """The fleet: counts ``by_status`` and ``by_kind``, ``live_capacity``, ``utilisation``."""
        return self._json("GET", "/api/v1/agents/stats")

    # -- the external agent's protocol (a token with the agent scope acts only as its agent) -

    def register(
        self,
        name: str,
        capabilities: Iterable[str],
        *,
        capacity: int = 1,
        version: str | None = None,
        hostname: str | None = None,
        pid: int | None = None,
    ) -> JsonObject:
        """Register an external agent (heartbeat it at least every OMOI_HEARTBEAT_INTERVAL);
        the agent, with its ``id``."""
        body = _given(
            name=name,
            capabilities=list(capabilities),
            capacity=capacity,
            version=version,
            hostname=hostname,
            pid=pid,
        )
        return self._json("POST", "/api/v1/agents/register", body=body)

    def heartbeat(self, agent_id: str, running: Iterable[str] | None = None) -> JsonObject:
        """Liveness: ``{agent_id, status}``. Naming the tasks it runs (``running``) lets omoi
        recover any running task the agent stops naming."""
        body = _given(running=None if running is None else list(running))
        return self._json("POST", f"/api/v1/agents/{quote(agent_id)}/heartbeat", body=body)

    def claim(self, agent_id: str, wait: float = 0.0) -> Claim | None:
        """The next queued task this agent may run, under a lease; None when there is none
        (after waiting up to ``wait`` seconds, at most 60, for one to be ready)."""
        path = f"/api/v1/agents/{quote(agent_id)}/claim"
        return self._json("POST", path, {"wait": wait or None}, held=wait)

    def claims(self, agent_id: str, most: int = 10, wait: float = 0.0) -> list[Claim]:
        """Up to ``most`` (at most 100) queued tasks for this agent in one round trip, each
        under its own lease; empty when none was ready within ``wait`` seconds."""
        path = f"/api/v1/agents/{quote(agent_id)}/claims"
        found = self._json("POST", path, {"max": most, "wait": wait or None}, held=wait)
        return found["items"]  # type: ignore[no-any-return]

    def post_logs(
        self, task_id: str, lease_token: str, lines: Iterable[str], stream: str = "agent"
    ) -> JsonObject:
        """Add ``lines`` (1,000 at most, no line breaks) to the log of the attempt the lease
        holds, as ``agent``, ``stdout`` or ``stderr``: its ``attempt``, the lines ``stored``
        and whether the log is ``truncated``."""
        body = {"lease_token": lease_token, "lines": list(lines), "stream": stream}
        return self._json("POST", f"/api/v1/tasks/{quote(task_id)}/logs", body=body)

    def complete(self, task_id: str, lease_token: str, result: Any = None) -> JsonObject:
        """Report success; the task as it is now. A lease that no longer holds the task
        (cancelled, recovered) is a 409 and the result is dropped."""
        body = {"lease_token": lease_token, "result": result}
        return self._json("POST", f"/api/v1/tasks/{quote(task_id)}/complete", body=body)

    def fail(
        self,
        task_id: str,
        lease_token: str,
        message: str,
        *,
        type: str = "ExternalError",
        category: str = "transient",
    ) -> JsonObject:
        """Report failure (``category`` transient or timeout is retried, permanent is not);
        the task as it is now."""
        error = {"message": message, "type": type, "category": category}
        body = {"lease_token": lease_token, "error": error}
        return self._json("POST", f"/api/v1/tasks/{quote(task_id)}/fail", body=body)

    # -- messages --------------------------------------------------------------------------

    def send(
        self,
        content: Any,
        *,
        to_agent: str | None = None,
        capability: str | None = None,
        broadcast: bool = False,
        type: str = "info",
        from_agent: str | None = None,
        thread_id: str | None = None,
        task_id: str | None = None,
    ) -> JsonObject:
        """Send to one agent, every agent with ``capability``, or (``broadcast``) everyone:
        the ``message_ids`` written, the ``thread_id`` and, for a handoff, a ``lease_token``."""
        body = {
            "content": content,
            **_given(
                to_agent=to_agent,
                capability=capability,
                broadcast=broadcast,
                type=type,
                from_agent=from_agent,
                thread_id=thread_id,
                task_id=task_id,
            ),
        }
        return self._json("POST", "/api/v1/messages", body=body)

    def inbox(
        self,
        agent_id: str,
        *,
        unread_only: bool = False,
        thread_id: str | None = None,
        limit: int = 100,
    ) -> list[JsonObject]:
        """The agent's messages, oldest first."""
        params = {"unread_only": unread_only, "thread_id": thread_id, "limit": limit}
        return self._json("GET", f"/api/v1/agents/{quote(agent_id)}/messages", params)["items"]

    def mark_read(self, agent_id: str, message_ids: Iterable[int]) -> int:
        """Mark messages of the agent's inbox read; how many were unread."""
        body = {"message_ids": list(message_ids)}
        path = f"/api/v1/agents/{quote(agent_id)}/messages/read"
        return int(self._json("POST", path, body=body)["marked"])

    # -- locks and the server --------------------------------------------------------------

    def locks(self, name: str | None = None) -> JsonObject:
        """Resource locks (all, or those called ``name``): ``held`` and the tasks ``waiting``."""
        return self._json("GET", "/api/v1/locks", {"name": name})

    def healthz(self) -> JsonObject:
        """The server is alive: ``{status, instance}`` (``OMOI_INSTANCE_ID``)."""
        return self._json("GET", "/healthz")

    def readyz(self) -> JsonObject:
        """Whether the server reaches its database and broker: ``status`` ``ready`` or
        ``unavailable`` (a 503, answered here, not raised) and the ``checks`` naming what is
        down."""
        return self._json("GET", "/readyz", accept=(503,))

    # -- events ----------------------------------------------------------------------------

    def events(
        self,
        *,
        ticket_id: str | None = None,
        entity_id: str | None = None,
        type: str | None = None,
        actor: str | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[JsonObject]:
        """The event log, oldest first, after the event ``after`` (None: all of it); ``type``
        is an event type or a prefix (``task.``), ``actor`` a token's id or name."""
        filters = {"ticket_id": ticket_id, "entity_id": entity_id, "type": type, "actor": actor}
        params = {**filters, "after": after, "limit": _page(limit)}
        return self._items("/api/v1/events", params, limit, cursor="after")

    def stream(
        self,
        *,
        ticket_id: str | None = None,
        entity_id: str | None = None,
        type: str | None = None,
        actor: str | None = None,
        after: int | None = None,
        timeout: float = 300.0,
    ) -> Iterator[JsonObject]:
        """Events as they are committed (filtered as ``events`` filters them), from the one
        after ``after`` (None: the beginning), until the API ends the stream ``timeout``
        seconds on (at most 3600)."""
        filters = {"ticket_id": ticket_id, "entity_id": entity_id, "type": type, "actor": actor}
        params = {**filters, "after": after, "timeout": timeout}
        resp = self._send("GET", "/api/v1/events/stream", params, stream=True)
        try:
            yield from _sse(iter(resp))
        except urllib3.exceptions.HTTPError as exc:  # cut off or silent mid-stream
            raise ApiUnreachable(self.url, _reason(exc)) from exc
        finally:  # an abandoned stream's connection cannot serve another request
            resp.close()

    def ticket_events(self, ticket_id: str, timeout: float = 3600.0) -> Iterator[JsonObject]:
        """A ticket's events, from its first, live until its walk ends (done, cancelled or
        blocked) or the stream's ``timeout`` passes. Its past is replayed too, so an event
        that ended an earlier walk (blocked, then resumed) ends nothing: the walk has ended
        when the ticket is no longer active and no later event of it could end it; the
        events after the ending one are read as a page, since the stream may not yet hold
        them."""
        for event in self.stream(ticket_id=ticket_id, timeout=timeout):
            yield event
            if not ends_ticket(event) or self.ticket(ticket_id)["status"] == TicketStatus.ACTIVE:
                continue
            later = self.events(ticket_id=ticket_id, after=event["id"])
            if not any(ends_ticket(e) for e in later):
                yield from later
                return


def _query_value(value: Any) -> str:
    """A query parameter as the API reads it: ``true``/``false`` for a bool."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _given(**fields: Any) -> JsonObject:
    """A request body of the fields given: one left None takes the API's default."""
    return {k: v for k, v in fields.items() if v is not None}


class CanvasFailed(Exception):
    """A canvas's ticket ended without its result: ``status`` (``blocked``, ``cancelled``) and
    ``failures``, each failed or cancelled task's ``key``, ``status`` and ``error``."""

    def __init__(self, ticket_id: str, status: str, failures: list[JsonObject]) -> None:
        first = failures[0] if failures else {}
        error = first.get("error") or {}
        why = f": {first.get('key')} {error.get('type', first.get('status'))}" if first else ""
        super().__init__(
            f"canvas ticket {ticket_id} ended {status}{why} {error.get('message', '')}"
        )
        self.ticket_id = ticket_id
        self.status = status
        self.failures = failures


@dataclass
class CanvasResult:
    """A submitted canvas, as Celery's ``AsyncResult`` is a sent one: ``ticket_id``,
    ``status`` (the ticket's), ``ready()`` and ``get()``."""

    client: Client
    ticket_id: str
    result_key: str

    @property
    def status(self) -> str:
        return str(self.client.ticket(self.ticket_id)["status"])

    def ready(self) -> bool:
        """Whether the ticket has ended (done, blocked or cancelled)."""
        return self.status != TicketStatus.ACTIVE

    def get(self, timeout: float | None = None, interval: float = 0.2) -> Any:
        """The canvas's result (its last task's) once the ticket is done; ``CanvasFailed`` if
        it ended otherwise, ``TimeoutError`` if ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status) == TicketStatus.ACTIVE:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"canvas ticket {self.ticket_id} still active after {timeout} s")
            time.sleep(interval)
        tasks = self.client.tasks(ticket_id=self.ticket_id, limit=None)
        if status == TicketStatus.DONE:
            return next(t["result"] for t in tasks if t["key"] == self.result_key)
        failures = [
            {"key": t["key"], "status": t["status"], "error": t["error"]}
            for t in tasks
            if t["status"] in (TaskStatus.FAILED, TaskStatus.CANCELLED)
        ]
        failures.sort(
            key=lambda f: f["status"] != TaskStatus.FAILED
        )  # the cause before its effects
        raise CanvasFailed(self.ticket_id, status, failures)


def _page(limit: int | None) -> int:
    """The page size to ask for: the API's largest page holds 500 tickets or 1000 tasks or
    events; 500 suits all three."""
    return min(limit or 500, 500)
