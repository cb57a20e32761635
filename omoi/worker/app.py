"""The worker's Celery app: ``celery -A omoi.worker.app worker`` (or ``omoi worker``).

Jobs are thin: ids in, one service call. Engines are built per process after fork. The only
job is ``omoi.run_task``: the repair sweeps run in ``omoi beat`` itself (``omoi/beat.py``), where
no busy pool can hold them up.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure

from omoi import process
from omoi.broker.app import RUN_TASK
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import TaskError
from omoi.services import attempts, failures, locks
from omoi.services.logs import AttemptLog
from omoi.worker import (
    demo,  # noqa: F401 - registers the demo agents
    logcapture,
    shell,
)
from omoi.worker.agent import WorkerAgent
from omoi.worker.handlers import registry


class AttemptFailed(Exception):
    """Raised by ``run_task`` once omoi recorded that the attempt failed (and published its
    retry, if it has one), so that its Celery job ends as a failure: Flower counts it and shows
    it as FAILURE, naming the error's category and type. Not its message, which may quote the
    payload (a URL, a command's output): the task's record in the API has it. Celery does not
    retry the job (no autoretry) nor log its traceback (``throws``), and acknowledges its
    message (``task_acks_on_failure``)."""

    def __init__(self, category: str, type_: str) -> None:
        super().__init__(category, type_)  # its args: it crosses to the main process pickled

    def __str__(self) -> str:
        return ": ".join(self.args)

    def __repr__(self) -> str:
        return f"AttemptFailed({self})"


def create_worker_app(root: Root) -> Celery:
    settings = root.settings
    process.set_up(settings.log_level)
    app = root.celery
    db, uow = root.db, root.uow  # the workflows load now: a bad workflow file stops start-up
    policy = root.policy
    signal, limits = root.log_signal, root.log_limits
    resolve = logcapture.capturing(
        root.resolve, lambda ctx: AttemptLog(db, signal, ctx.task_id, ctx.attempt, limits)
    )
    shell.configure(settings.shell_env, (settings.database_url, settings.broker_url))

    def interrupt(task_id: uuid.UUID, attempt: int) -> None:
        """Hand back an attempt this worker stopped running because it was told to stop:
        re-queued under a new attempt at once, not counted as a retry, its locks freed."""
        error = TaskError(
            ErrorCategory.INTERRUPTED, "WorkerShutdown", "its worker stopped before it finished"
        )
        if failures.fail_attempt(uow, policy, task_id, attempt, error):
            locks.release(uow, task_id)

    agent = WorkerAgent(
        db,
        settings.heartbeat_interval,
        settings.shutdown_grace,
        interrupt,
        settings.enable_task_types,
    )
    agent.connect_signals()

    @app.task(name=RUN_TASK, bind=True, throws=(AttemptFailed,))
    def run_task(self, task_id: str, attempt: int) -> str:  # type: ignore[no-untyped-def]
        """What the attempt did (succeeded, superseded, waiting, duplicate); a failed one
        raises, outside any handler, so no exception of the handler's is chained to it."""
        outcome = attempts.run_attempt(
            uow,
            policy,
            resolve,
            uuid.UUID(task_id),
            attempt,
            self.request.id,
            agent.id,
            settings.exec_types,
        )
        if outcome.error is not None:
            raise AttemptFailed(outcome.error.category, outcome.error.type)
        return outcome.word

    @task_failure.connect(sender=run_task, weak=False)
    def child_died(exception: BaseException, args: Any, **_: Any) -> None:
        """In the worker's main process when the pool child running an attempt died: killed
        by the hard time limit (a timeout), during a shutdown (handed back as interrupted) or
        by anything else (lost). Record it, then retry under a new attempt or fail, as for
        any other failure. Other exceptions (``AttemptFailed``) were raised in the child,
        which recorded them."""
        if isinstance(exception, TimeLimitExceeded):
            category, message = ErrorCategory.TIMEOUT, "hard time limit exceeded"
        elif isinstance(exception, WorkerLostError):
            if agent.stopping:  # stopped by the shutdown, or died during it: not its fault
                agent.hand_back(args[0], args[1])
                return
            category, message = ErrorCategory.LOST, "the pool process running it died"
        else:
            return
        error = TaskError(category, type(exception).__name__, f"{message} ({exception})")
        failures.fail_attempt(uow, policy, uuid.UUID(args[0]), args[1], error)

    return app


@functools.cache
def _app() -> Celery:
    return create_worker_app(Root(Settings.from_env(), Role.WORKER, handlers=registry))


def __getattr__(name: str) -> Any:
    """``app``, built on first use (``celery -A omoi.worker.app`` reads it): importing this
    module builds nothing."""
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
