"""This worker as an agent: registered when it starts, heartbeating from its main process
(which keeps beating while the pool's children run long tasks, and says which attempts they
run), handing its running attempts back when told to stop, offline once it has stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from celery import platforms
from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import state
from kombu.common import ignore_errors

from omoi import __version__
from omoi.broker.app import RUN_TASK
from omoi.domain.enums import AgentKind
from omoi.domain.routing import served_by
from omoi.persistence import Database
from omoi.services import agents

log = structlog.get_logger(__name__)

Interrupt = Callable[[uuid.UUID, int], None]


def running_requests() -> list[Any]:
    """The ``run_task`` requests the pool's children run now, from Celery's own record in the
    main process (``state.active_requests``: accepted by a child, not yet finished)."""
    while True:
        try:
            requests = list(state.active_requests)
        except RuntimeError:  # the main thread changed the set while it was copied
            continue
        return [r for r in requests if r.type == RUN_TASK]  # (r.name is the shadow it ran as)


def _say(line: str) -> None:
    """A line on the worker's terminal, where Celery writes its own shutdown messages."""
    print(line, file=sys.__stdout__, flush=True)


def _tasks(n: int) -> str:
    return f"{n} running task{'s' if n != 1 else ''}"


class WorkerAgent:
    def __init__(
        self,
        db: Database,
        interval: float,
        grace: float,
        interrupt: Interrupt,
        enabled: Sequence[str] = (),
    ) -> None:
        self.db = db
        self.interval = interval
        self.grace = grace
        self._interrupt = interrupt
        self._enabled = enabled  # the exec task types its operator enabled
        self.id: uuid.UUID | None = None  # set before the pool forks: children inherit it
        self._worker: Any = None  # Celery's WorkController, whose pool runs the attempts
        self._stop = threading.Event()
        self._stopping = threading.Event()
        self._now = threading.Event()
        self._drainer: threading.Thread | None = None
        self._handed_back: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        """A shutdown was requested: an attempt whose child dies now is handed back."""
        return self._stopping.is_set()

    def connect_signals(self) -> None:
        worker_init.connect(self._register, weak=False)
        worker_ready.connect(self._start_beating, weak=False)
        worker_shutting_down.connect(self._shutting_down, weak=False)
        worker_shutdown.connect(self._shutdown, weak=False)

    def _register(self, sender: Any, **_: Any) -> None:
        self._worker = sender
        queues = list(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
        capabilities, exec_types = served_by(queues)
        # what it will run: enabled, and its queues consumed (``celery worker -Q`` may differ)
        enabled = [t for t in exec_types if t in self._enabled]
        self.id = agents.register(
            self.db,
            name=sender.hostname,
            kind=AgentKind.CELERY,
            capabilities=capabilities,
            capacity=int(sender.concurrency or 1),
            version=__version__,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            enabled_task_types=enabled,
        )
        log.info(
            "agent_registered",
            agent_id=str(self.id),
            capabilities=capabilities,
            enabled_task_types=enabled,
        )

    def _start_beating(self, **_: Any) -> None:
        threading.Thread(target=self._beat, name="omoi-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.id is not None:
                    running = [uuid.UUID(r.args[0]) for r in running_requests()]
                    agents.heartbeat(self.db, self.id, running)
            except Exception as exc:  # the database may be restarting: beat again later
                log.warning("heartbeat_failed", agent_id=str(self.id), error=repr(exc))

    def _shutting_down(self, **_: Any) -> None:
        """In the main process's signal handler, at the first SIGTERM or SIGINT (Celery's warm
        shutdown then waits for its pool): stop consuming, wait out the grace in a thread, and
        let a second Ctrl-C (or SIGQUIT) end it at once instead of Celery's cold shutdown,
        which would kill the attempts without handing them back. A repeated SIGTERM changes
        nothing (``omoi up``'s children get the terminal's Ctrl-C and then its SIGTERM)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        consumer = getattr(self._worker, "consumer", None)
        if consumer is not None and consumer.task_consumer is not None:
            # as Celery's cold shutdown does: stop taking messages now, or the attempts this
            # worker hands back could come straight back to it while it stops
            ignore_errors(consumer, consumer.task_consumer.cancel)
        for name in ("SIGINT", "SIGQUIT"):
            platforms.signals[name] = self._stop_now
        self._drainer = threading.Thread(target=self._drain, name="omoi-shutdown", daemon=True)
        self._drainer.start()

    def _stop_now(self, *_: Any) -> None:
        _say("worker: stopping now")
        self._now.set()

    def _drain(self) -> None:
        """Wait up to the grace for the running attempts, then hand back what still runs as
        interrupted (re-queued at once, no retry spent) and stop the children running it, so
        the worker exits in grace + a moment instead of waiting for its longest task."""
        deadline = time.monotonic() + self.grace
        told = -1
        while (running := running_requests()) and not self._now.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if len(running) != told:
                told = len(running)
                _say(
                    f"worker: waiting up to {left:.0f} s for {_tasks(told)}; "
                    "Ctrl-C again to stop now"
                )
            self._now.wait(min(0.1, left))
        if self._now.is_set():
            self.db.outage_patience = 0  # stopping now: no waiting out a database outage
        running = running_requests()
        if running:
            _say(f"worker: handing back {_tasks(len(running))} as interrupted")
        for request in running:
            self.hand_back(request.args[0], request.args[1])
            if request.worker_pid and self._worker is not None:
                # through the pool, which then counts the child's death as asked for (no
                # "exited prematurely" error) and acknowledges the attempt's message
                with contextlib.suppress(ProcessLookupError, AttributeError):  # already gone
                    self._worker.pool.terminate_job(request.worker_pid, signal.SIGTERM)

    def hand_back(self, task_id: str, attempt: int) -> None:
        """Give an attempt back as interrupted, once: the drain and the pool's report of the
        child it stopped both ask. If the database refuses, the agent sweep recovers it."""
        with self._lock:
            if (task_id, attempt) in self._handed_back:
                return
            self._handed_back.add((task_id, attempt))
        try:
            self._interrupt(uuid.UUID(task_id), attempt)
            log.info("attempt_handed_back", task_id=task_id, attempt=attempt)
        except Exception as exc:
            log.warning("hand_back_failed", task_id=task_id, attempt=attempt, error=repr(exc))

    def _shutdown(self, **_: Any) -> None:
        if self._drainer is not None:
            self._drainer.join(timeout=5)  # its hand-backs land before the agent goes offline
        self._stop.set()
        if self.id is not None:
            agents.go_offline(self.db, self.id)
