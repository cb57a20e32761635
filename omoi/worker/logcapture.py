"""An attempt's log, as the worker keeps it for the handler's run: ``ctx.log`` writes to it,
and a ``logging`` handler on the root logger takes the records the handler's code emits
meanwhile. A prefork child runs one attempt at a time, so every record of the child in that
time is the attempt's, but omoi's and Celery's own (structlog prints its lines and never
reaches ``logging``; Celery's loggers are left out by name). The log is closed, its last
lines stored, before the handler returns to the attempt, so before its result commits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from omoi.services.context import Handler, TaskContext
from omoi.services.logs import AttemptLog

# loggers whose records are the worker's own, not the handler's (each with its children)
OWN_LOGGERS = frozenset({"omoi", "celery", "kombu", "billiard", "amqp"})
RECORD_FORMAT = "%(levelname)s %(name)s: %(message)s"


class AttemptRecords(logging.Handler):
    """Writes the records of the handler's code to the log of the attempt running now
    (``attempt_log``) as ``log`` lines (a record with a traceback is several). Records
    emitted while one is being written (by the database driver storing a batch) are left
    out, so writing never feeds itself. One per process, pointed at each attempt in turn:
    making a logging handler costs more than a noop attempt's whole run in the child."""

    def __init__(self) -> None:
        super().__init__()
        self.attempt_log: AttemptLog | None = None
        self.setFormatter(logging.Formatter(RECORD_FORMAT))
        self._writing = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.partition(".")[0] in OWN_LOGGERS
        return not own and not getattr(self._writing, "on", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        attempt_log = self.attempt_log
        if attempt_log is None:
            return
        self._writing.on = True
        try:
            attempt_log.write(self.format(record), "log")
        except Exception:
            self.handleError(record)
        finally:
            self._writing.on = False


def capturing(
    resolve: Callable[[str], Handler | None], open_log: Callable[[TaskContext], AttemptLog]
) -> Callable[[str], Handler | None]:
    """``resolve``, its handlers run each with the attempt's log (``open_log(ctx)``) open."""
    records = AttemptRecords()
    root = logging.getLogger()

    def resolve_capturing(task_type: str) -> Handler | None:
        handler = resolve(task_type)
        if handler is None:
            return None

        def run(ctx: TaskContext) -> Any:
            attempt_log = ctx._log = records.attempt_log = open_log(ctx)
            root.addHandler(records)
            try:
                return handler(ctx)
            finally:
                root.removeHandler(records)
                records.attempt_log = None
                attempt_log.close()

        return run

    return resolve_capturing
