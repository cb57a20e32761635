"""The ``omoi`` command."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from omoi.config import Settings
from omoi.domain.auth import BUILTIN_EXEC_TYPES, Scope
from omoi.domain.enums import TERMINAL_TASK_STATUSES
from omoi.domain.routing import queues_for_worker
from omoi.domain.specs import TOKEN
from omoi.domain.workflow import WorkflowError
from omoi.persistence import Database
from omoi.services import tokens, workflows
from omoi.services.errors import NotFound

TOKEN_FILE = "token"
DEMO_TICKET: dict[str, Any] = {
    "title": "Add input validation to the orders API",
    "description": "Reject malformed orders with a clear error instead of a 500.",
    "workflow": "software-dev",
}


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed OMOI_* number: say which, without a traceback
        raise click.ClickException(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _client_token(settings: Settings) -> str:
    """``OMOI_TOKEN``, else the local token ``omoi up`` saved in the data directory."""
    saved = settings.data_dir / TOKEN_FILE
    return settings.token or (saved.read_text().strip() if saved.exists() else "")


def _open(
    url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> Any:
    """A request to the API with the client's bearer token; HTTP errors end the command."""
    token = _client_token(_settings())
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
            **(headers or {}),
        },
    )
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{exc.code}: {exc.read().decode(errors='replace')}") from exc


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    with _open(url, body, headers) as resp:
        return json.loads(resp.read())


@click.group()
def main() -> None:
    """omoi: tickets, phases, task DAGs and agent fleets on Celery."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations."""
    from omoi.persistence.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@main.command()
@click.option("--host", default=None, help="Default OMOI_API_HOST.")
@click.option("--port", type=int, default=None, help="Default OMOI_API_PORT.")
@click.option("--workers", type=int, default=None, help="Processes (default WEB_CONCURRENCY or 2).")
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn's gevent workers (omoi/gunicorn_conf.py)."""
    settings = _settings()
    bind = f"{host or settings.api_host}:{port or settings.api_port}"
    os.execvp(
        sys.executable,
        [
            *(sys.executable, "-m", "gunicorn", "-c", "python:omoi.gunicorn_conf"),
            *("--bind", bind),
            *(("--workers", str(workers)) if workers else ()),
        ],
    )


@main.command()
@click.option("--capabilities", default="", help="Comma-separated, e.g. python,review.")
@click.option(
    "--enable",
    default=None,
    help="Exec task types this worker runs, comma-separated: shell, http, or types "
    "OMOI_EXEC_TASK_TYPES marks (default OMOI_ENABLE_TASK_TYPES; none without it).",
)
@click.option("--concurrency", type=int, default=None)
@click.option("--name", default=None, help="Worker node name (default omoi@<host>).")
@click.option("--loglevel", default="INFO")
@click.option("--events", is_flag=True, help="Send task events (for Flower).")
def worker(
    capabilities: str,
    enable: str | None,
    concurrency: int | None,
    name: str | None,
    loglevel: str,
    events: bool,
) -> None:
    """Run an agent: a prefork Celery worker (the pool that enforces time limits). Tasks of
    an exec type (shell, http, …) run only on workers that enable their type."""
    if enable is not None:  # the worker app reads its settings from the environment
        os.environ["OMOI_ENABLE_TASK_TYPES"] = enable
    settings = _settings()  # names an unknown type without a traceback
    bad = [c for c in capabilities.split(",") if c.strip() and not TOKEN.fullmatch(c.strip())]
    if bad:
        raise click.ClickException(f"{bad[0]!r} is not a capability name ({TOKEN.pattern})")
    from omoi.worker.app import app

    queues = queues_for_worker(capabilities.split(","), settings.enable_task_types)
    argv = [
        "worker",
        "--pool",
        "prefork",
        "-Q",
        ",".join(queues),
        "--loglevel",
        loglevel,
        "-n",
        name or "omoi@%h",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if events:
        argv.append("--task-events")
    app.worker_main(argv)


@main.command()
@click.option("--loglevel", default="INFO")
@click.option(
    "--pidfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Written once the sweeps run, removed when beat stops (omoi up waits for it).",
)
def beat(loglevel: str, pidfile: Path | None) -> None:
    """Run the repair sweeps (outbox, retries, deadlines, agents, gates, locks) in this process
    every OMOI_SWEEP_INTERVAL and, on Redis, the event relay. A second beat is harmless."""
    from omoi.beat import serve

    serve(_settings(), loglevel, pidfile)


def _local_token(settings: Settings) -> str:
    """The local user's admin token: the saved one while it is valid, else a new one saved
    (mode 0600) where the CLI looks for it."""
    db = Database(settings.database_url, pool_size=1)
    try:
        saved = settings.data_dir / TOKEN_FILE
        if saved.exists() and tokens.Authenticator(db)(saved.read_text().strip()):
            return saved.read_text().strip()
        _, secret = tokens.create(db, "local", [Scope.ADMIN])
    finally:
        db.dispose()
    saved.touch(mode=0o600)
    saved.write_text(secret + "\n")
    return secret


STARTUP_TIMEOUT = 300.0  # a loaded 2-core machine boots gunicorn and Celery in tens of seconds
POLL_TIMEOUT = 5.0
LOG_TAIL = 20


@dataclass
class Child:
    """One process of the stack, its output in ``<data dir>/logs/<name>.log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def report(self) -> str:
        """Which process stopped, and the end of its log: what the user needs to fix it."""
        lines = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        tail = "\n".join(f"  {line}" for line in lines) or "  (no output)"
        return (
            f"the {self.name} stopped (exit code {self.popen.returncode}); "
            f"the end of {self.log}:\n{tail}"
        )


@dataclass
class Stack:
    """What ``omoi up`` and ``omoi demo`` started: where it listens and its processes."""

    url: str
    token: str
    instance: str
    beat_pidfile: Path
    children: list[Child] = field(default_factory=list)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)


def _stack_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--port`` and ``--concurrency``, shared by ``omoi up`` and ``omoi demo``."""
    command = click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="Pool processes of the worker.",
    )(command)
    return click.option(
        "--port", type=int, default=None, help="Where the API listens (default OMOI_API_PORT)."
    )(command)


def _refuse_taken_port(host: str, port: int) -> None:
    """Stop before starting anything if the port is taken: whatever serves there would answer
    for the API and gunicorn would give up binding only after a while."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "stop what runs there or choose another --port"
            ) from None


def _spawn(stack: Stack, settings: Settings, *args: str) -> None:
    """``omoi <args>``, named by its command, its output in the data directory's logs."""
    name = args[0]
    log = settings.data_dir / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    env = {**os.environ, "OMOI_INSTANCE_ID": stack.instance}
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(
            [sys.executable, "-m", "omoi", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    stack.children.append(Child(name, popen, log))


def _get_json(url: str, token: str = "") -> Any:
    """The JSON at ``url``, or None while the server is not there or not ready: start-up polls
    on until its deadline whatever a single request runs into."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=POLL_TIMEOUT
        ) as resp:
            return json.loads(resp.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None


def _api_ready(stack: Stack) -> bool:
    """Our gunicorn answers (not another server on the port) and reaches database and broker."""
    health = _get_json(f"{stack.url}/healthz")
    return (
        isinstance(health, dict)
        and health.get("instance") == stack.instance
        and _get_json(f"{stack.url}/readyz") is not None
    )


def _worker_ready(stack: Stack) -> bool:
    """Our worker has loaded its handlers and workflows and registered its agent."""
    agents = _get_json(f"{stack.url}/api/v1/agents?kind=celery", stack.token)
    pid, host = stack.child("worker").popen.pid, socket.gethostname()
    return isinstance(agents, dict) and any(
        a["pid"] == pid and a["hostname"] == host and a["status"] in ("idle", "busy")
        for a in agents["items"]
    )


def _beat_ready(stack: Stack) -> bool:
    """Our beat runs its sweeps: it writes its pidfile once their loop has started."""
    try:
        return stack.beat_pidfile.read_text().strip() == str(stack.child("beat").popen.pid)
    except OSError:
        return False


def _check_alive(children: list[Child]) -> None:
    """End the command if any process of the stack has stopped, naming each with its log."""
    gone = [c for c in children if c.popen.poll() is not None]
    if gone:
        raise click.ClickException("\n".join(c.report() for c in gone))


def _wait_ready(stack: Stack, timeout: float = STARTUP_TIMEOUT) -> None:
    """Until every process is ready: polling, not one attempt, since a loaded machine accepts
    connections long before gunicorn's worker or Celery has booted."""
    deadline = time.monotonic() + timeout
    waiting = {"api": _api_ready, "worker": _worker_ready, "beat": _beat_ready}
    while True:
        _check_alive(stack.children)
        waiting = {name: ready for name, ready in waiting.items() if not ready(stack)}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"{', '.join(waiting)} not ready after {timeout:.0f} s; "
                f"see {stack.children[0].log.parent}"
            )
        time.sleep(0.2)


@contextmanager
def _running_stack(settings: Settings, port: int | None, concurrency: int) -> Iterator[Stack]:
    """API, worker (serving every capability the workflows' templates ask for) and beat,
    started and ready; stopped when the block ends, however it ends."""
    from omoi.persistence.migrate import upgrade

    port = port or settings.api_port
    _refuse_taken_port(settings.api_host, port)
    try:
        loaded = workflows.configure(settings.workflows_dir or None).values()
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None
    capabilities = sorted(
        {c for w in loaded for p in w.phases for t in p.tasks for c in t.capabilities}
    )
    upgrade(settings.database_url)
    host = "127.0.0.1" if settings.api_host in ("", "0.0.0.0") else settings.api_host
    stack = Stack(
        url=f"http://{f'[{host}]' if ':' in host else host}:{port}",
        token=_local_token(settings),
        instance=uuid.uuid4().hex,
        beat_pidfile=settings.data_dir / "beat.pid",
    )
    try:
        _spawn(stack, settings, "api", "--port", str(port), "--workers", "1")
        _spawn(
            stack,
            settings,
            "worker",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--capabilities",
            ",".join(capabilities),
            *_laptop_exec_types(),
        )
        _spawn(
            stack, settings, "beat", "--loglevel", "WARNING", "--pidfile", str(stack.beat_pidfile)
        )
        _wait_ready(stack)
        yield stack
    finally:
        _stop(stack.children)


def _laptop_exec_types() -> list[str]:
    """``omoi up`` is one user's stack on loopback, whose only token is that user's admin
    token: its worker runs shell and http unless OMOI_ENABLE_TASK_TYPES says otherwise."""
    if "OMOI_ENABLE_TASK_TYPES" in os.environ:
        return []
    return ["--enable", ",".join(sorted(BUILTIN_EXEC_TYPES))]


def _stop(children: list[Child]) -> None:
    """SIGTERM to all first, so they shut down side by side, then wait out the worker's
    shutdown grace (it hands back what it could not finish); kill what is still up after it.
    A Ctrl-C meanwhile is forwarded: a second SIGINT stops the worker at once, still handing
    its attempts back."""
    for c in children:
        if c.popen.poll() is None:
            c.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _settings().shutdown_grace + 10
    for c in children:
        while c.popen.poll() is None:
            try:
                c.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.popen.kill()
                c.popen.wait()
            except KeyboardInterrupt:
                for other in children:
                    if other.popen.poll() is None:
                        other.popen.send_signal(signal.SIGINT)


@main.command()
@_stack_options
def up(port: int | None, concurrency: int) -> None:
    """Run API, worker and beat together (embedded SQLite by default); the worker serves every
    capability the workflows' templates ask for. Ctrl-C or SIGTERM stops them."""
    settings = _settings()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children too
    try:
        with _running_stack(settings, port, concurrency) as stack:
            url = stack.url
            click.echo(
                f"omoi is up: API {url}/api/v1, board {url}/board, "
                f"OpenAPI {url}/api/v1/openapi.json"
            )
            click.echo(
                f"token (admin, saved in {settings.data_dir / TOKEN_FILE} for the CLI): "
                f"{stack.token}"
            )
            click.echo(f"sign in to the board at {url}/board/login with that token")
            click.echo(f"logs: {stack.children[0].log.parent}")
            while True:
                _check_alive(stack.children)
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def _bar(fraction: float, width: int = 30) -> str:
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_lines(ticket: dict[str, Any], phases: list[dict[str, Any]]) -> list[str]:
    """The ticket's bar, then one bar per phase that has tasks (in workflow order)."""
    current = ticket["previous_phase"] if ticket["phase"] == "PHASE_BLOCKED" else ticket["phase"]
    lines = [
        f"{_bar(ticket['progress'])} {ticket['progress'] * 100:5.1f}%  {ticket['status']:<9} "
        f"{ticket['phase']}"
    ]
    for p in phases:
        counts = p["task_counts"]
        done = sum(n for s, n in counts.items() if s in TERMINAL_TASK_STATUSES)
        marker = ">" if p["phase"] == current else " "
        detail = " ".join(f"{s}={n}" for s, n in sorted(counts.items()))
        name = p["phase"].removeprefix("PHASE_").lower()
        lines.append(
            f"{marker} {name:<15}{_bar(p['progress'], 20)} {done}/{sum(counts.values())}  {detail}"
        )
    return lines


def follow(url: str, ticket_id: str, timeout: float) -> dict[str, Any]:
    """Show per-phase progress bars until the ticket leaves ``active``; return the final
    ticket. On a terminal the bars are redrawn in place; otherwise each change is printed."""
    deadline = time.monotonic() + timeout
    tty = sys.stdout.isatty()
    shown: list[str] = []
    while True:
        ticket = _request(f"{url}/api/v1/tickets/{ticket_id}")
        phases = _request(f"{url}/api/v1/tickets/{ticket_id}/phase-progress")["items"]
        lines = progress_lines(ticket, phases)
        if lines != shown:
            if tty and shown:
                click.echo(f"\x1b[{len(shown)}F\x1b[J", nl=False)  # up, then clear below
            click.echo("\n".join(lines))
            shown = lines
        if ticket["status"] != "active":
            return ticket
        if time.monotonic() > deadline:
            raise click.ClickException(f"ticket {ticket_id} still active after {timeout:.0f} s")
        time.sleep(0.3)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow progress until the ticket finishes.")
@click.option("--idempotency-key", default=None)
def submit(path: Path, wait: bool, idempotency_key: str | None) -> None:
    """Submit a ticket from a YAML or JSON file."""
    url = _settings().client_url
    body = yaml.safe_load(path.read_text())
    key = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    ticket = _request(f"{url}/api/v1/tickets", body, key)
    click.echo(f"ticket {ticket['id']} accepted with {len(ticket['tasks'])} tasks")
    if wait:
        follow(url, ticket["id"], timeout=3600)


@main.command()
@click.argument("ticket_id")
@click.option("--timeout", type=float, default=3600)
def status(ticket_id: str, timeout: float) -> None:
    """Show a ticket's progress until it finishes."""
    ticket = follow(_settings().client_url, ticket_id, timeout)
    click.echo(f"ticket {ticket_id}: {ticket['status']} ({ticket['phase']})")


@main.command()
@click.option("--timeout", type=float, default=120, help="Seconds the ticket may take.")
@_stack_options
def demo(timeout: float, port: int | None, concurrency: int) -> None:
    """Start the embedded stack, walk a sample ticket through every phase of the
    software-dev workflow with the built-in demo agents, show it finishing, stop."""
    settings = _settings()
    click.echo(f"starting API, worker and beat (data in {settings.data_dir}) ...")
    with _running_stack(settings, port, concurrency) as stack:
        url = stack.url
        ticket = _request(f"{url}/api/v1/tickets", DEMO_TICKET)
        click.echo(f"submitted ticket {ticket['id']} ({DEMO_TICKET['workflow']} workflow)")
        final = follow(url, ticket["id"], timeout)
        tasks = _request(f"{url}/api/v1/tasks?ticket_id={ticket['id']}")["items"]
        for t in sorted(tasks, key=lambda t: t["started_at"] or ""):
            click.echo(
                f"  {t['key']:<11} {t['status']:<10} {t['started_at']} -> {t['finished_at']}"
            )
        click.echo(f"ticket {final['status']} in {final['phase']}")
        if final["status"] != "done" or any(
            t["status"] not in TERMINAL_TASK_STATUSES for t in tasks
        ):
            raise click.ClickException("demo ticket did not finish cleanly")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned table."""
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


@main.command()
@click.option("--ticket", "ticket_id", default=None)
@click.option("--status", default=None)
@click.option("--limit", type=int, default=100)
def tasks(ticket_id: str | None, status: str | None, limit: int) -> None:
    """List tasks."""
    query = "&".join(
        f"{k}={v}" for k, v in (("ticket_id", ticket_id), ("status", status), ("limit", limit)) if v
    )
    items = _request(f"{_settings().client_url}/api/v1/tasks?{query}")["items"]
    _table(items, ["id", "key", "task_type", "status", "attempt", "retry_count", "agent_id"])


@main.command()
@click.option("--capability", default=None)
def agents(capability: str | None) -> None:
    """List agents with their health."""
    query = f"?capability={capability}" if capability else ""
    items = _request(f"{_settings().client_url}/api/v1/agents{query}")["items"]
    _table(
        items,
        [
            "id",
            "name",
            "kind",
            "status",
            "capabilities",
            "running_tasks",
            "capacity",
            "last_heartbeat",
        ],
    )


@main.command()
@click.option("--ticket", "ticket_id", default=None)
@click.option("--actor", default=None, help="Only what this token (id or name) changed.")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option("--timeout", type=float, default=3600)
def events(ticket_id: str | None, actor: str | None, follow: bool, timeout: float) -> None:
    """Print the event log (``--follow`` streams it live), each event with its token."""
    url = _settings().client_url
    filters = {"ticket_id": ticket_id, "actor": actor}
    query = "".join(f"{k}={quote(v)}&" for k, v in filters.items() if v)
    if not follow:
        for e in _request(f"{url}/api/v1/events?{query}limit=1000")["items"]:
            _event_line(e)
        return
    stream_url = f"{url}/api/v1/events/stream?{query}timeout={timeout}"
    with _open(stream_url, timeout=timeout + 30) as stream:
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                _event_line(json.loads(line[len("data: ") :]))


def _event_line(e: dict[str, Any]) -> None:
    payload = json.dumps(e["payload"], sort_keys=True)
    actor = e["actor_name"] or "-"
    click.echo(f"{e['id']:>8}  {e['created_at']}  {e['type']:<22} {actor:<16} {payload}")


@main.group()
def token() -> None:
    """API tokens (stored hashed; the secret is shown once)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([s.value for s in Scope]),
    help="read, submit, agent, exec or admin; repeat for several (exec: submit tasks "
    "whose type runs code, with submit).",
)
def token_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a token and print its secret (the only time it is shown)."""
    row, secret = tokens.create(_database(), name, list(scopes))
    click.echo(f"token {row['id']} ({name}: {', '.join(row['scopes'])})", err=True)
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """Tokens with their scopes, bound agent and revocation time (never the secrets)."""
    _table(
        tokens.list_tokens(_database()),
        ["id", "name", "scopes", "agent_id", "created_at", "revoked_at"],
    )


@token.command("revoke")
@click.argument("ref")
def token_revoke(ref: str) -> None:
    """Revoke a token by id or name (every API process refuses it within 2 s)."""
    try:
        count = tokens.revoke(_database(), ref)
    except NotFound as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {count} token(s)")


def _database() -> Database:
    return Database(_settings().database_url, pool_size=1)
