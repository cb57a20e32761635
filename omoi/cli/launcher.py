"""Process start-up: ``omoi api``, ``worker`` and ``beat`` each become one process;
``omoi up`` and ``omoi demo`` start all three as children (a ``Stack`` of ``Child``
processes), wait until each is ready and stop them together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from omoi.cli.admin import local_token
from omoi.cli.client import follow
from omoi.cli.common import EXIT_NOT_DONE, Failure, load_settings
from omoi.client import ApiError, ApiUnreachable, Client
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.enums import TERMINAL_TASK_STATUSES
from omoi.domain.routing import queues_for_worker
from omoi.domain.specs import TOKEN
from omoi.domain.workflow import WorkflowError

DEMO_TICKET: dict[str, Any] = {
    "title": "Add input validation to the orders API",
    "description": "Reject malformed orders with a clear error instead of a 500.",
    "workflow": "software-dev",
}


@click.command()
@click.option("--host", default=None, help="Default OMOI_API_HOST.")
@click.option("--port", type=int, default=None, help="Default OMOI_API_PORT.")
@click.option("--workers", type=int, default=None, help="Processes (default WEB_CONCURRENCY or 2).")
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API with gunicorn's gevent workers (omoi/gunicorn_conf.py)."""
    settings = load_settings()
    bind = f"{host or settings.api_host}:{port or settings.api_port}"
    os.execvp(
        sys.executable,
        [
            *(sys.executable, "-m", "gunicorn", "-c", "python:omoi.gunicorn_conf"),
            *("--bind", bind),
            *(("--workers", str(workers)) if workers else ()),
        ],
    )


@click.command()
@click.option("--capabilities", default="", help="Comma-separated, e.g. python,review.")
@click.option(
    "--enable",
    default=None,
    help="Exec task types this worker runs, comma-separated: shell, http, or types "
    "OMOI_EXEC_TASK_TYPES marks (default OMOI_ENABLE_TASK_TYPES; none without it).",
)
@click.option(
    "--celery-app",
    default=None,
    help="A Celery app (package.module:app) whose tasks this worker runs as celery:<name>, "
    "for canvases submitted with Client.submit_canvas (default OMOI_CELERY_APP).",
)
@click.option("--concurrency", type=int, default=None)
@click.option("--name", default=None, help="Worker node name (default omoi@<host>).")
@click.option("--loglevel", default="INFO")
@click.option("--events", is_flag=True, help="Send task events (for Flower).")
def worker(
    capabilities: str,
    enable: str | None,
    celery_app: str | None,
    concurrency: int | None,
    name: str | None,
    loglevel: str,
    events: bool,
) -> None:
    """Run an agent: a prefork Celery worker (the pool that enforces time limits). Tasks of
    an exec type (shell, http, …) run only on workers that enable their type."""
    if enable is not None:  # the worker app reads its settings from the environment
        os.environ["OMOI_ENABLE_TASK_TYPES"] = enable
    if celery_app is not None:
        os.environ["OMOI_CELERY_APP"] = celery_app
    settings = load_settings()  # names an unknown type without a traceback
    bad = [c for c in capabilities.split(",") if c.strip() and not TOKEN.fullmatch(c.strip())]
    if bad:
        raise click.ClickException(f"{bad[0]!r} is not a capability name ({TOKEN.pattern})")
    from omoi.worker.canvas import CeleryAppError

    try:
        from omoi.worker.app import app
    except CeleryAppError as exc:
        raise click.ClickException(str(exc)) from None

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


@click.command()
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

    serve(load_settings(), loglevel, pidfile)


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
    probe: Client = field(init=False, repr=False)  # start-up's polls, each within POLL_TIMEOUT

    def __post_init__(self) -> None:
        self.probe = Client(self.url, self.token, timeout=POLL_TIMEOUT)

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


def _answer(ask: Callable[[], Any]) -> Any:
    """What ``ask`` got from the API, or None while the server is not there, not ready or not
    ours (an answer not shaped as omoi's): start-up polls on until its deadline whatever a
    single request runs into."""
    try:
        return ask()
    except (ApiError, ApiUnreachable, LookupError, TypeError):
        return None


def _api_ready(stack: Stack) -> bool:
    """Our gunicorn answers (not another server on the port) and reaches database and broker."""
    health = _answer(stack.probe.healthz)
    return (
        isinstance(health, dict)
        and health.get("instance") == stack.instance
        and _answer(lambda: stack.probe.readyz()["status"]) == "ready"
    )


def _worker_ready(stack: Stack) -> bool:
    """Our worker has loaded its handlers and workflows and registered its agent."""
    pid, host = stack.child("worker").popen.pid, socket.gethostname()
    return bool(
        _answer(
            lambda: any(
                a["pid"] == pid and a["hostname"] == host and a["status"] in ("idle", "busy")
                for a in stack.probe.agents(kind="celery")
            )
        )
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
        loaded = Root(settings, Role.CLI).workflows.all()
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None
    capabilities = sorted(
        {c for w in loaded for p in w.phases for t in p.tasks for c in t.capabilities}
    )
    upgrade(settings.database_url)
    host = "127.0.0.1" if settings.api_host in ("", "0.0.0.0") else settings.api_host
    stack = Stack(
        url=f"http://{f'[{host}]' if ':' in host else host}:{port}",
        token=local_token(settings),
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
    deadline = time.monotonic() + load_settings().shutdown_grace + 10
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


@click.command()
@_stack_options
def up(port: int | None, concurrency: int) -> None:
    """Run API, worker and beat together (embedded SQLite by default); the worker serves every
    capability the workflows' templates ask for. Ctrl-C or SIGTERM stops them."""
    settings = load_settings()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the children too
    try:
        with _running_stack(settings, port, concurrency) as stack:
            url = stack.url
            click.echo(f"omoi is up; the board is at {url}/board")
            click.echo(f"API {url}/api/v1, OpenAPI {url}/api/v1/openapi.json")
            click.echo(f"token (admin, saved in {settings.token_file} for the CLI): {stack.token}")
            click.echo(f"sign in to the board at {url}/board/login with that token")
            click.echo(f"logs: {stack.children[0].log.parent}")
            while True:
                _check_alive(stack.children)
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--timeout", type=float, default=120, help="Seconds the ticket may take.")
@_stack_options
def demo(timeout: float, port: int | None, concurrency: int) -> None:
    """Start the embedded stack, walk a sample ticket through every phase of the
    software-dev workflow with the built-in demo agents, show it finishing, stop."""
    settings = load_settings()
    click.echo(f"starting API, worker and beat (data in {settings.data_dir}) ...")
    with _running_stack(settings, port, concurrency) as stack:
        client = Client(stack.url, stack.token)
        ticket = client.submit(DEMO_TICKET)
        click.echo(f"submitted ticket {ticket['id']} ({DEMO_TICKET['workflow']} workflow)")
        final = follow(client, ticket["id"], timeout)
        tasks = client.tasks(ticket_id=ticket["id"], limit=None)
        for t in sorted(tasks, key=lambda t: t["started_at"] or ""):
            click.echo(
                f"  {t['key']:<11} {t['status']:<10} {t['started_at']} -> {t['finished_at']}"
            )
        click.echo(f"ticket {final['status']} in {final['phase']}")
        if final["status"] != "done" or any(
            t["status"] not in TERMINAL_TASK_STATUSES for t in tasks
        ):
            raise Failure("demo ticket did not finish cleanly", EXIT_NOT_DONE)
