"""The commands that talk to a running API through ``omoi.client`` with the client's token:
submit, status, tickets, tasks, show, cancel, retry, approve, agents and events, and the
progress bars they draw."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml

from omoi.cli.common import EXIT_API, EXIT_NOT_DONE, Failure, clip, load_settings, table
from omoi.client import ApiError, Client
from omoi.domain.enums import TERMINAL_TASK_STATUSES, TicketStatus

POLL = 0.3  # seconds between two looks at a followed ticket


def api() -> Client:
    """The API the settings name, with the token the CLI sends."""
    return Client.from_settings(load_settings())


# -- following a ticket ----------------------------------------------------------------------


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


def follow(client: Client, ticket_id: str, timeout: float) -> dict[str, Any]:
    """Show per-phase progress bars until the ticket leaves ``active``; return the final
    ticket. On a terminal the bars are redrawn in place; otherwise each change is printed."""
    deadline = time.monotonic() + timeout
    tty = sys.stdout.isatty()
    shown: list[str] = []
    while True:
        ticket = client.ticket(ticket_id)
        lines = progress_lines(ticket, client.phase_progress(ticket_id))
        if lines != shown:
            if tty and shown:
                click.echo(f"\x1b[{len(shown)}F\x1b[J", nl=False)  # up, then clear below
            click.echo("\n".join(lines))
            shown = lines
        if ticket["status"] != TicketStatus.ACTIVE:
            return ticket
        if time.monotonic() > deadline:
            raise Failure(f"ticket {ticket_id} still active after {timeout:.0f} s")
        time.sleep(POLL)


def conclude(client: Client, ticket: dict[str, Any]) -> None:
    """Say how the ticket ended; unless it is done, end the command with ``EXIT_NOT_DONE``
    and why (its failed tasks, the reasons its gate gave)."""
    click.echo(f"ticket {ticket['id']}: {ticket['status']} ({ticket['phase']})")
    if ticket["status"] == TicketStatus.DONE:
        return
    why = []
    if failed := ticket["task_counts"].get("failed"):
        why.append(f"{failed} task{'s' if failed > 1 else ''} failed")
    if ticket["status"] == TicketStatus.BLOCKED:
        latest = client.gate_status(ticket["id"])["latest"]
        if latest and not latest["passed"]:
            why.append(f"the {latest['phase']} gate: {'; '.join(latest['reasons'])}")
    blocked = ticket["status"] == TicketStatus.BLOCKED
    where = f" after {ticket['previous_phase']}" if blocked else f" in {ticket['phase']}"
    reasons = f": {', '.join(why)}" if why else ""
    raise Failure(f"ticket {ticket['id']} ended {ticket['status']}{where}{reasons}", EXIT_NOT_DONE)


# -- submitting ------------------------------------------------------------------------------


def read_ticket(path: Path) -> dict[str, Any]:
    """The ticket a YAML or JSON file holds; what is wrong with it in one line."""
    try:
        body = yaml.safe_load(path.read_bytes())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise Failure(f"{path}: {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise Failure(f"{path}: {clip(str(exc), 200)}") from None
    if body is None:
        raise Failure(f"{path} is empty: a ticket needs at least a title")
    if not isinstance(body, dict):
        raise Failure(f"{path} holds a {type(body).__name__}; a ticket is a mapping (title, tasks)")
    try:
        json.dumps(body, allow_nan=True)
    except TypeError as exc:  # YAML reads 2024-01-01 as a date, which JSON cannot carry
        raise Failure(f"{path}: {exc}; quote such values") from None
    return body


def accepted(client: Client, ticket: dict[str, Any]) -> str:
    """What submitting did: the phases its workflow walks, or (a plain DAG) how many tasks it
    has. A token that may not read the workflows gets the count."""
    count = f"ticket {ticket['id']} accepted with {len(ticket['tasks'])} tasks"
    try:
        known = {w["name"]: w for w in client.workflows()}
    except ApiError as exc:
        if exc.status != 403:
            raise
        return count
    phases = known[ticket["workflow"]]["phases"] if ticket["workflow"] in known else []
    if len(phases) <= 2:  # one working phase, then PHASE_DONE
        return count
    walk = " → ".join(p.removeprefix("PHASE_") for p in phases)
    return f"ticket {ticket['id']} accepted: workflow {ticket['workflow']} walks {walk}"


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Follow progress until the ticket finishes.")
@click.option("--idempotency-key", default=None)
@click.option("--timeout", type=float, default=3600, help="Seconds --wait follows it.")
def submit(path: Path, wait: bool, idempotency_key: str | None, timeout: float) -> None:
    """Submit a ticket from a YAML or JSON file (with --wait: exit 3 unless it ends done)."""
    body = read_ticket(path)
    client = api()
    ticket = client.submit(body, idempotency_key)
    click.echo(accepted(client, ticket))
    if wait:
        conclude(client, follow(client, ticket["id"], timeout))


@click.command()
@click.argument("ticket_id", type=click.UUID)
@click.option("--timeout", type=float, default=3600)
def status(ticket_id: uuid.UUID, timeout: float) -> None:
    """Show a ticket's progress until it finishes; exit 3 unless it ends done."""
    client = api()
    conclude(client, follow(client, str(ticket_id), timeout))


# -- looking ---------------------------------------------------------------------------------


@click.command()
@click.option("--status", default=None, help="active, blocked, done or cancelled.")
@click.option("--workflow", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def tickets(status: str | None, workflow: str | None, limit: int) -> None:
    """List tickets, newest first."""
    items = api().tickets(status=status, workflow=workflow, limit=limit)
    for t in items:
        t["title"] = clip(t["title"], 40)
        t["progress"] = f"{t['progress'] * 100:.0f}%"
    table(items, ["id", "title", "workflow", "status", "phase", "progress", "created_at"])


def _error_text(error: dict[str, Any] | None) -> str | None:
    if not error:
        return None
    return f"{error.get('category')} {error.get('type')}: {error.get('message')}"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@click.command()
@click.option("--ticket", "ticket_id", type=click.UUID, default=None)
@click.option("--status", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def tasks(ticket_id: uuid.UUID | None, status: str | None, limit: int) -> None:
    """List tasks, newest first, with each one's error and result (cut; see omoi show)."""
    ticket = str(ticket_id) if ticket_id else None
    items = api().tasks(ticket_id=ticket, status=status, newest_first=True, limit=limit)
    for t in items:
        t["error"] = clip(_error_text(t["error"]) or "-")
        t["result"] = clip(_json(t["result"])) if t["result"] is not None else None
    table(items, ["id", "key", "task_type", "status", "attempt", "retry_count", "error", "result"])


class AgentNames:
    """Agent ids to names, each agent read once (its id when it is gone)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.names: dict[str, str] = {}

    def __call__(self, agent_id: str | None) -> str | None:
        if agent_id is None:
            return None
        if agent_id not in self.names:
            try:
                self.names[agent_id] = self.client.agent(agent_id)["name"]
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self.names[agent_id] = agent_id
        return self.names[agent_id]


@click.command()
@click.argument("task_id", type=click.UUID)
def show(task_id: uuid.UUID) -> None:
    """One task: its state, error, result and each attempt (start, end, outcome, agent)."""
    client = api()
    t = client.task(str(task_id))
    agent = AgentNames(client)
    retries = f"retries {t['retry_count']} of {t['max_retries']}"
    fields = [
        ("task", f"{t['id']}  {t['key']} ({t['task_type']})"),
        ("ticket", f"{t['ticket_id']}  {t['phase']}"),
        ("status", f"{t['status']}  attempt {t['attempt']}, {retries}"),
        ("agent", agent(t["agent_id"])),
        ("depends", ", ".join(t["depends_on"]) or None),
        ("waiting", t["waiting_for"]),
        ("created", t["created_at"]),
        ("started", t["started_at"]),
        ("finished", t["finished_at"]),
        ("error", _error_text(t["error"])),
    ]
    for name, value in fields:
        click.echo(f"{name:<9}{value if value is not None else '-'}")
    result = _json(t["result"])
    if len(result) > 70:
        result = "\n" + json.dumps(t["result"], indent=2, sort_keys=True, ensure_ascii=False)
    click.echo(f"{'result':<9}{result if t['result'] is not None else '-'}")
    click.echo("attempts:")
    attempts = [
        {**a, "agent": agent(a.get("agent_id")), "error": _error_text(a["error"])}
        for a in t["attempts"]
    ]
    table(attempts, ["attempt", "started_at", "ended_at", "outcome", "agent", "error"])


@click.command()
@click.option("--capability", default=None)
def agents(capability: str | None) -> None:
    """List agents with their health."""
    table(
        api().agents(capability),
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


# -- acting ----------------------------------------------------------------------------------


@click.command()
@click.argument("ref", type=click.UUID)
@click.option("--reason", default=None, help="Recorded with the cancellation.")
def cancel(ref: uuid.UUID, reason: str | None) -> None:
    """Cancel a ticket (all its open tasks) or a task (and its dependents), by id."""
    client = api()
    try:
        ticket = client.cancel_ticket(str(ref), reason)
    except ApiError as exc:
        if exc.code != "not_found":
            raise
    else:
        cancelled = ticket["task_counts"].get("cancelled", 0)
        click.echo(f"ticket {ref} cancelled; {cancelled} of its tasks are cancelled")
        return
    try:
        task = client.cancel_task(str(ref), reason)
    except ApiError as exc:
        if exc.code != "not_found":
            raise
        raise Failure(f"no ticket or task {ref}", EXIT_API) from None
    click.echo(f"task {ref} ({task['key']}) cancelled, and the tasks that depend on it")


@click.command()
@click.argument("task_id", type=click.UUID)
def retry(task_id: uuid.UUID) -> None:
    """Re-run a failed task with a fresh retry budget; its cancelled dependents wait again."""
    t = api().retry_task(str(task_id))
    click.echo(f"task {t['id']} ({t['key']}) is {t['status']} again, attempt {t['attempt']}")


@click.command()
@click.argument("ticket_id", type=click.UUID)
@click.option("--comment", default="", help="Recorded with the approval.")
@click.option("--phase", default=None, help="The phase whose gate to approve (default: current).")
def approve(ticket_id: uuid.UUID, comment: str, phase: str | None) -> None:
    """Approve the gate of the phase a ticket waits in (the approver is your token)."""
    client = api()
    gate = client.gate_status(str(ticket_id))
    if phase is None and not (gate["requires"] or {}).get("approval"):
        raise Failure(f"ticket {ticket_id} waits for no approval in {gate['phase']}")
    t = client.approve(str(ticket_id), comment, phase)
    click.echo(
        f"approved {phase or gate['phase']} of ticket {ticket_id}; "
        f"it is {t['status']} in {t['phase']}"
    )


# -- the event log ---------------------------------------------------------------------------


class TaskKeys:
    """Task ids to keys: a ticket's tasks are read when one of them first shows up (again
    when a task it did not have yet does: a later phase's)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.keys: dict[str, str] = {}

    def __call__(self, event: dict[str, Any]) -> str:
        task_id, ticket_id = event["entity_id"], event["ticket_id"]
        if event["entity_type"] != "task" or task_id is None:
            return "-"
        if task_id not in self.keys and ticket_id is not None:
            found = self.client.tasks(ticket_id=ticket_id, limit=None)
            self.keys.update({t["id"]: t["key"] for t in found})
        return self.keys.setdefault(task_id, "-")


@click.command()
@click.option("--ticket", "ticket_id", type=click.UUID, default=None)
@click.option("--actor", default=None, help="Only what this token (id or name) changed.")
@click.option(
    "--follow",
    is_flag=True,
    help="Keep printing events as they happen (with --ticket: until the ticket ends).",
)
@click.option("--timeout", type=float, default=3600, help="Seconds --follow follows.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="The oldest this many (without --follow).",
)
def events(
    ticket_id: uuid.UUID | None, actor: str | None, follow: bool, timeout: float, limit: int
) -> None:
    """Print the event log, each event with its task's key and its token (a failure's
    traceback is left out: the task's timeline in the API has it)."""
    client = api()
    ticket = str(ticket_id) if ticket_id else None
    found: Iterable[dict[str, Any]]
    if not follow:
        found = client.events(ticket_id=ticket, actor=actor, limit=limit)
    elif ticket is not None and actor is None:
        found = client.ticket_events(ticket, timeout=timeout)
    else:
        found = client.stream(ticket_id=ticket, actor=actor, timeout=timeout)
    key = TaskKeys(client)
    for e in found:
        payload = _json({k: v for k, v in e["payload"].items() if k != "traceback"})
        actor_name = e["actor_name"] or "-"
        click.echo(
            f"{e['id']:>8}  {e['created_at']}  {e['type']:<22} {key(e):<14} "
            f"{actor_name:<16} {payload}"
        )


@click.command()
@click.argument("task_id", type=click.UUID)
@click.option("--attempt", type=click.IntRange(min=1), default=None, help="Default: the latest.")
@click.option("--follow", is_flag=True, help="Print lines as they come, until the attempt ends.")
@click.option("--timeout", type=float, default=3600, help="Seconds --follow waits at most.")
def logs(task_id: uuid.UUID, attempt: int | None, follow: bool, timeout: float) -> None:
    """Print an attempt's log: stdout, log and agent lines on standard output, stderr lines
    (and a truncation marker) on standard error."""
    client, task = api(), str(task_id)
    if not follow:
        after = 0
        while True:
            page = client.logs(task, attempt=attempt, after=after)
            for line in page["lines"]:
                _log_line(line)
            if not page["lines"]:
                return
            after = page["next_after"]
    for frame in client.follow_logs(task, attempt=attempt, timeout=timeout):
        if "line" in frame:
            _log_line(frame)
        else:
            click.echo(f"attempt {frame['attempt']} ended: {frame['status']}", err=True)
            return
    raise Failure(f"the attempt was still running after {timeout:.0f} s")


def _log_line(line: dict[str, Any]) -> None:
    click.echo(line["line"], err=line["stream"] in ("stderr", "omoi"))
