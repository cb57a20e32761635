"""The ``omoi`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
import yaml

from omoi.config import Settings
from omoi.domain.auth import Scope
from omoi.domain.enums import TERMINAL_TASK_STATUSES
from omoi.domain.routing import queues_for_worker
from omoi.models import Database
from omoi.services import relay, tokens, workflows
from omoi.services.errors import NotFound

TOKEN_FILE = "token"
DEMO_TICKET: dict[str, Any] = {
    "title": "Add input validation to the orders API",
    "description": "Reject malformed orders with a clear error instead of a 500.",
    "workflow": "software-dev",
}


def _settings() -> Settings:
    settings = Settings.from_env()
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
    from omoi.models.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@main.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--workers", type=int, default=2)
def api(host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP API with gunicorn."""
    settings = _settings()
    bind = f"{host or settings.api_host}:{port or settings.api_port}"
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            bind,
            "--workers",
            str(workers),
            "--worker-class",
            "gthread",  # threads: a Server-Sent Events stream holds its connection
            "--threads",
            "8",
            "omoi.api:create_app()",
        ],
    )


@main.command()
@click.option("--capabilities", default="", help="Comma-separated, e.g. python,review.")
@click.option("--concurrency", type=int, default=None)
@click.option("--name", default=None, help="Worker node name (default omoi@<host>).")
@click.option("--loglevel", default="INFO")
@click.option("--events", is_flag=True, help="Send task events (for Flower).")
def worker(
    capabilities: str, concurrency: int | None, name: str | None, loglevel: str, events: bool
) -> None:
    """Run an agent: a prefork Celery worker (the pool that enforces time limits)."""
    from omoi.worker.app import CONTROL_QUEUE, app

    queues = [*queues_for_worker(capabilities.split(",")), CONTROL_QUEUE]
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
def beat(loglevel: str) -> None:
    """Run the beat scheduler (outbox and repair sweeps) and, on Redis, the event relay."""
    from omoi.worker.app import app

    settings = _settings()
    if settings.broker_url.startswith(("redis://", "rediss://")):
        relay.start(Database(settings.database_url, pool_size=2), settings.broker_url)
    app.start(
        [
            "beat",
            "--loglevel",
            loglevel,
            "--schedule",
            str(settings.data_dir / "celerybeat-schedule"),
        ]
    )


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


def _spawn_stack(settings: Settings, quiet: bool) -> list[subprocess.Popen[bytes]]:
    from omoi.models.migrate import upgrade

    upgrade(settings.database_url)
    _local_token(settings)
    out = subprocess.DEVNULL if quiet else None
    cmd = [sys.executable, "-m", "omoi"]
    loaded = workflows.configure(settings.workflows_dir or None).values()
    capabilities = sorted(
        {c for w in loaded for p in w.phases for t in p.tasks for c in t.capabilities}
    )
    worker = [
        *cmd,
        "worker",
        "--concurrency",
        "2",
        "--loglevel",
        "WARNING",
        "--capabilities",
        ",".join(capabilities),
    ]
    return [
        subprocess.Popen([*cmd, "api", "--workers", "1"], stdout=out, stderr=out),
        subprocess.Popen(worker, stdout=out, stderr=out),
        subprocess.Popen([*cmd, "beat", "--loglevel", "WARNING"], stdout=out, stderr=out),
    ]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the children and wait out the worker's shutdown grace (it hands back what it
    could not finish). A Ctrl-C meanwhile is forwarded: a second SIGINT stops the worker at
    once, still handing its attempts back."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _settings().shutdown_grace + 10
    for p in procs:
        while p.poll() is None:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except KeyboardInterrupt:
                for q in procs:
                    if q.poll() is None:
                        q.send_signal(signal.SIGINT)


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise click.ClickException("a process of the stack exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise click.ClickException(f"API not ready at {url} after {timeout:.0f} s")


@main.command()
def up() -> None:
    """Run API, worker and beat together (embedded SQLite by default); the worker serves every
    capability the workflows' templates ask for. Ctrl-C or SIGTERM stops them."""
    settings = _settings()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children too
    procs = _spawn_stack(settings, quiet=False)
    url = settings.client_url
    try:
        _wait_ready(url, procs)
        click.echo(f"omoi is up: API {url}/api/v1, OpenAPI {url}/api/v1/openapi.json")
        click.echo(
            f"token (admin, saved in {settings.data_dir / TOKEN_FILE} for the CLI): "
            f"{_local_token(settings)}"
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(procs)


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
@click.option("--timeout", type=float, default=120)
def demo(timeout: float) -> None:
    """Start the embedded stack, walk a sample ticket through every phase of the
    software-dev workflow with the built-in demo agents, show it finishing, stop."""
    settings = _settings()
    url = settings.client_url
    click.echo(f"starting API, worker and beat (data in {settings.data_dir}) ...")
    procs = _spawn_stack(settings, quiet=True)
    try:
        _wait_ready(url, procs)
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
    finally:
        _stop(procs)


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
@click.option("--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option("--timeout", type=float, default=3600)
def events(ticket_id: str | None, follow: bool, timeout: float) -> None:
    """Print the event log (``--follow`` streams it live)."""
    url = _settings().client_url
    query = f"ticket_id={ticket_id}&" if ticket_id else ""
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
    click.echo(f"{e['id']:>8}  {e['created_at']}  {e['type']:<22} {payload}")


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
    help="read, submit, agent or admin; repeat for several.",
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
