"""A small, typed, synchronous client of omoi's HTTP API, on urllib3: tickets, tasks, agents,
workflows, events (a page, or the live stream as an iterator) and approvals.

It speaks HTTP only (a contract forbids it the database, the services and Celery), so any
program can drive omoi with it; the ``omoi`` CLI is built on it. Every answer the API gives
with an error status becomes an ``ApiError`` carrying the API's ``error.code``, ``message``
and ``details``; an API that cannot be reached (refused, unresolvable, timed out, cut off
mid-answer) becomes an ``ApiUnreachable`` naming the URL it tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from omoi.config import Settings
from omoi.domain.canvas import compile_canvas
from omoi.domain.enums import TaskStatus, TicketStatus
from omoi.domain.events import EventType

STREAM_READ_TIMEOUT = 60.0  # the API sends a keep-alive every 15 s on a quiet stream
JsonObject = dict[str, Any]


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
        self._pool = urllib3.PoolManager(retries=False)

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
    ) -> urllib3.BaseHTTPResponse:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        head = {"Accept": "application/json", **(headers or {})}
        if self.token:
            head["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            head["Content-Type"] = "application/json"
        read = STREAM_READ_TIMEOUT if stream else self.timeout
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
        if resp.status >= 400:
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
        return self._json("GET", f"/api/v1/tickets/{quote(ticket_id)}/gate-status")

    def cancel_ticket(self, ticket_id: str, reason: str | None = None) -> JsonObject:
        body = {"reason": reason} if reason else {}
        return self._json("POST", f"/api/v1/tickets/{quote(ticket_id)}/cancel", body=body)

    def approve(self, ticket_id: str, comment: str = "", phase: str | None = None) -> JsonObject:
        """Approve the gate of ``phase`` (default: the phase the ticket is in, or was blocked
        in); the approver recorded is this client's token."""
        body = {"comment": comment, **({"phase": phase} if phase else {})}
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
        body = {"reason": reason} if reason else {}
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

    def agents(self, capability: str | None = None) -> list[JsonObject]:
        return self._json("GET", "/api/v1/agents", {"capability": capability})["items"]

    def agent(self, agent_id: str) -> JsonObject:
        return self._json("GET", f"/api/v1/agents/{quote(agent_id)}")

    # -- events ----------------------------------------------------------------------------

    def events(
        self,
        *,
        ticket_id: str | None = None,
        actor: str | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[JsonObject]:
        """The event log, oldest first, after the event ``after`` (None: all of it)."""
        params = {"ticket_id": ticket_id, "actor": actor, "after": after, "limit": _page(limit)}
        return self._items("/api/v1/events", params, limit, cursor="after")

    def stream(
        self,
        *,
        ticket_id: str | None = None,
        actor: str | None = None,
        after: int | None = None,
        timeout: float = 300.0,
    ) -> Iterator[JsonObject]:
        """Events as they are committed, from the one after ``after`` (None: the beginning),
        until the API ends the stream ``timeout`` seconds on (at most 3600)."""
        params = {"ticket_id": ticket_id, "actor": actor, "after": after, "timeout": timeout}
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
