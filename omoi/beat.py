"""``omoi beat``: the repair sweeps, run in this process every ``OMOI_SWEEP_INTERVAL``, and on
Redis the event relay.

The sweeps are not Celery jobs. A job waits for a free pool slot, and a fleet running long
agent tasks has none: the jobs expired unrun exactly when a worker died, so lost-worker
recovery, outbox republishing, retry wake-ups, deadline, gate and lock sweeps all stopped.
Here no user task can crowd them out, and Flower lists only user tasks' jobs. Each sweep
takes its PostgreSQL advisory lock (``statements.sweep_lock``), so a second beat is harmless; on
SQLite, ``BEGIN IMMEDIATE`` serializes them with every other writer of the file.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from omoi import process
from omoi.broker import relay
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.services import agents, failures, locks, logs, outbox, phases, retention

log = structlog.get_logger(__name__)

Sweep = Callable[[], int]


def sweeps(root: Root) -> dict[str, Sweep]:
    """Every repair sweep by name, in the order a round runs them: agents first, so the same
    round frees a lost worker's locks; the outbox last, to publish what the others left."""
    settings, uow, policy = root.settings, root.uow, root.policy
    db, dispatcher = uow.db, uow.dispatcher
    deadline_slack = settings.time_limit_grace + 2 * settings.sweep_interval
    reset_pending = False

    def republish() -> int:
        """A broker reset is reported once: keep it until a sweep has republished for it."""
        nonlocal reset_pending
        reset_pending = reset_pending or dispatcher.broker_reset()
        count = outbox.sweep(
            db,
            dispatcher,
            settings.outbox_republish_age,
            settings.outbox_lost_age,
            broker_reset=reset_pending,
        )
        reset_pending = False
        return count

    return {
        "agents": lambda: agents.sweep_stale(uow, policy, settings.heartbeat_timeout),
        "deadlines": lambda: failures.expire_deadlines(uow, policy, deadline_slack),
        "sync_points": lambda: failures.expire_sync_points(uow),
        "locks": lambda: locks.sweep(uow),
        "retries": lambda: failures.wake_retries(uow),
        "gates": lambda: phases.sweep_gates(uow),
        "logs": lambda: logs.sweep(db, settings.log_retention),
        "tickets": lambda: retention.sweep(db, settings.ticket_retention, settings.ticket_archive),
        "outbox": republish,
    }


def run_round(named: dict[str, Sweep]) -> dict[str, int]:
    """Run every sweep once; returns what each did. One that fails (its database or broker
    away) is logged and the others still run: the next round tries it again."""
    done: dict[str, int] = {}
    for name, sweep in named.items():
        try:
            done[name] = sweep()
        except Exception as exc:
            log.exception("sweep_failed", sweep=name, error=repr(exc))
    return done


def run(named: dict[str, Sweep], interval: float, stop: threading.Event) -> None:
    """A round every ``interval`` seconds, start to start, until ``stop`` is set."""
    while not stop.is_set():
        started = time.monotonic()
        for name, count in run_round(named).items():
            if count:
                log.info("swept", sweep=name, count=count)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def serve(settings: Settings, log_level: str, pidfile: Path | None = None) -> None:
    """The process: sweep rounds in a thread until SIGTERM or SIGINT, which let the round
    under way finish. The signals are taken with ``sigwait`` (blocked in every thread,
    which inherit the mask), not by a handler that could interrupt a thread holding a lock."""
    process.set_up(log_level)
    root = Root(settings, Role.BEAT)
    root.workflows  # noqa: B018 - loaded now: a passed gate starts the next phase
    db = root.db
    ends = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, ends)
    if settings.broker_url.startswith(("redis://", "rediss://")):
        relay.start(db, settings.broker_url, settings.relay_channel)
    stop = threading.Event()
    named = sweeps(root)
    loop = threading.Thread(
        target=run, args=(named, settings.sweep_interval, stop), name="omoi-sweeps"
    )
    loop.start()
    log.info("beat_started", sweeps=list(named), interval=settings.sweep_interval)
    if pidfile is not None:
        pidfile.write_text(f"{os.getpid()}\n")
    try:
        signal.sigwait(ends)
        stop.set()
        loop.join()
        db.dispose()
    finally:
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
