"""The HTTP client: commands that talk to a running API with the client's token (submit,
status, tasks, agents, events) and the progress bars they draw."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml

from omoi.cli.common import TOKEN_FILE, load_settings, table
from omoi.config import Settings
from omoi.domain.enums import TERMINAL_TASK_STATUSES


def _client_token(settings: Settings) -> str:
    """``OMOI_TOKEN``, else the local token ``omoi up`` saved in the data directory."""
    saved = settings.data_dir / TOKEN_FILE
    return settings.token or (saved.read_text().strip() if saved.exists() else "")


def _open(
    url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> Any:
    """A request to the API with the client's bearer token; HTTP errors end the command."""
    token = _client_token(load_settings())
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


def request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    with _open(url, body, headers) as resp:
        return json.loads(resp.read())


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
        ticket = request(f"{url}/api/v1/tickets/{ticket_id}")
        phases = request(f"{url}/api/v1/tickets/{ticket_id}/phase-progress")["items"]
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


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow progress until the ticket finishes.")
@click.option("--idempotency-key", default=None)
def submit(path: Path, wait: bool, idempotency_key: str | None) -> None:
    """Submit a ticket from a YAML or JSON file."""
    url = load_settings().client_url
    body = yaml.safe_load(path.read_text())
    key = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    ticket = request(f"{url}/api/v1/tickets", body, key)
    click.echo(f"ticket {ticket['id']} accepted with {len(ticket['tasks'])} tasks")
    if wait:
        follow(url, ticket["id"], timeout=3600)


@click.command()
@click.argument("ticket_id")
@click.option("--timeout", type=float, default=3600)
def status(ticket_id: str, timeout: float) -> None:
    """Show a ticket's progress until it finishes."""
    ticket = follow(load_settings().client_url, ticket_id, timeout)
    click.echo(f"ticket {ticket_id}: {ticket['status']} ({ticket['phase']})")


@click.command()
@click.option("--ticket", "ticket_id", default=None)
@click.option("--status", default=None)
@click.option("--limit", type=int, default=100)
def tasks(ticket_id: str | None, status: str | None, limit: int) -> None:
    """List tasks."""
    query = "&".join(
        f"{k}={v}" for k, v in (("ticket_id", ticket_id), ("status", status), ("limit", limit)) if v
    )
    items = request(f"{load_settings().client_url}/api/v1/tasks?{query}")["items"]
    table(items, ["id", "key", "task_type", "status", "attempt", "retry_count", "agent_id"])


@click.command()
@click.option("--capability", default=None)
def agents(capability: str | None) -> None:
    """List agents with their health."""
    query = f"?capability={capability}" if capability else ""
    items = request(f"{load_settings().client_url}/api/v1/agents{query}")["items"]
    table(
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


@click.command()
@click.option("--ticket", "ticket_id", default=None)
@click.option("--actor", default=None, help="Only what this token (id or name) changed.")
@click.option("--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option("--timeout", type=float, default=3600)
def events(ticket_id: str | None, actor: str | None, follow: bool, timeout: float) -> None:
    """Print the event log (``--follow`` streams it live), each event with its token."""
    url = load_settings().client_url
    filters = {"ticket_id": ticket_id, "actor": actor}
    query = "".join(f"{k}={quote(v)}&" for k, v in filters.items() if v)
    if not follow:
        for e in request(f"{url}/api/v1/events?{query}limit=1000")["items"]:
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


LOG_PAGE = 1000  # lines per request of ``omoi logs``


@click.command()
@click.argument("task_id")
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="Default: the latest.")
@click.option("--follow", is_flag=True, help="Print lines as they come, until the attempt ends.")
@click.option("--timeout", type=float, default=3600, help="Seconds --follow waits at most.")
def logs(task_id: str, attempt: int | None, follow: bool, timeout: float) -> None:
    """Print an attempt's log: stdout, log and agent lines on standard output, stderr lines
    (and a truncation marker) on standard error."""
    base = f"{load_settings().client_url}/api/v1/tasks/{quote(task_id)}/logs"
    which = f"attempt={attempt}&" if attempt else ""
    if not follow:
        after = 0
        while True:
            page = request(f"{base}?{which}after={after}&limit={LOG_PAGE}")
            for line in page["lines"]:
                _log_line(line)
            if len(page["lines"]) < LOG_PAGE:
                return
            after = page["next_after"]
    with _open(f"{base}/stream?{which}timeout={timeout}", timeout=timeout + 30) as stream:
        event = ""
        for raw in stream:
            text = raw.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[len("event: ") :]
            elif text.startswith("data: ") and event == "line":
                _log_line(json.loads(text[len("data: ") :]))
            elif text.startswith("data: ") and event == "end":
                end = json.loads(text[len("data: ") :])
                click.echo(f"attempt {end['attempt']} ended: {end['status']}", err=True)
                return
    raise click.ClickException(f"the attempt was still running after {timeout:.0f} s")


def _log_line(line: dict[str, Any]) -> None:
    click.echo(line["line"], err=line["stream"] in ("stderr", "omoi"))
