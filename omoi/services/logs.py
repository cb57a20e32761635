"""Task logs: what each attempt wrote, line by line, kept in PostgreSQL per attempt.

Three writers: a worker's attempt (``AttemptLog``: a ``shell`` command's output as it
comes, the handler's ``ctx.log`` and ``logging`` lines), buffered and written in batches; an
external agent posting lines under its lease (``post``); and nothing else. Each attempt keeps
at most ``LogLimits.max_lines`` lines, then one truncation marker; each line at most
``LogLimits.max_line_chars`` characters. After every batch the writer wakes the API's
followers through a ``Signal`` (``omoi.services.signals``; Redis pub/sub in
``omoi/broker/signals.py``); followers re-read the database on each wake, so a lost wake-up
delays a line, never loses it. Beat's ``sweep`` deletes lines older than the retention.

A noop costs nothing here: an ``AttemptLog`` that is never written to starts no thread,
runs no statement and publishes nothing.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select, tuple_

from omoi.domain.enums import HANDLER_STREAMS
from omoi.persistence import Database
from omoi.persistence.logs import Appended, append, task_logs
from omoi.persistence.statements import sweep_lock, tasks
from omoi.persistence.types import utcnow
from omoi.services.errors import Conflict, NotFound
from omoi.services.signals import Signal

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 0.2  # seconds a written line may wait in the worker before it is stored
FLUSH_LINES = 500  # lines that are stored at once, without waiting for the interval
FLUSH_TICK = 0.05  # seconds between the flusher's looks at the buffers
RETENTION_BATCH = 5000  # lines one retention statement deletes, in a transaction of its own
RETENTION_BATCHES = 20  # statements per sweep: what is left waits for the next round


@dataclass(frozen=True)
class LogLimits:
    """How much an attempt's log keeps (``OMOI_LOG_MAX_LINES``, ``OMOI_LOG_MAX_LINE_CHARS``)."""

    max_lines: int = 10_000
    max_line_chars: int = 4096

    @property
    def marker(self) -> str:
        """The last line of a log that reached ``max_lines``."""
        return (
            f"[omoi] this attempt's log reached {self.max_lines} lines (OMOI_LOG_MAX_LINES); "
            "later lines were dropped"
        )


def lines_of(text: str, max_chars: int) -> list[str]:
    """``text`` as the lines a log stores: one per line of it (an empty text is one empty
    line), each cut to ``max_chars`` (ending in ``…``), NUL characters and lone surrogates,
    which PostgreSQL cannot store, replaced."""
    lines = []
    for line in text.splitlines() or [""]:
        if len(line) > max_chars:
            line = line[: max_chars - 1] + "…"
        if "\x00" in line:
            line = line.replace("\x00", "\ufffd")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = line.encode("utf-8", "replace").decode("utf-8")
        lines.append(line)
    return lines


class AttemptLog:
    """The log of one attempt as its worker writes it. ``write`` buffers; a batch is stored
    (one multi-row INSERT, outside any transaction of the attempt's) once ``FLUSH_LINES``
    lines wait, by the writer itself, or ``FLUSH_INTERVAL`` after its first line, by the
    process's flusher thread; ``close`` stores the rest, and the worker closes the log before
    the attempt's result commits, so a finished attempt's log is complete. Batches are stored
    one at a time, in order. A failed write is logged and dropped: the attempt goes on.
    Thread-safe: a handler's own threads may write too."""

    def __init__(
        self,
        db: Database,
        signal: Signal,
        task_id: uuid.UUID,
        attempt: int,
        limits: LogLimits,
    ) -> None:
        self.db = db
        self.signal = signal
        self.task_id = task_id
        self.attempt = attempt
        self.limits = limits
        self._lock = threading.Lock()  # the buffer and the flags below
        self._storing = threading.Lock()  # one batch at a time, in order
        self._pending: list[tuple[datetime, str, str]] = []
        self._sent = 0  # lines this writer sent: the attempt has at least as many
        self._written = False  # whether a line ever entered the buffer
        self._full = False
        self._closed = False
        self.due: float | None = None  # when the flusher stores the buffer (monotonic)

    def write(self, text: str, stream: str = "log") -> None:
        """Add ``text`` (one line per line of it) to the log as ``stream``."""
        if stream not in HANDLER_STREAMS:
            raise ValueError(f"a log stream is one of {', '.join(HANDLER_STREAMS)}, not {stream!r}")
        lines = lines_of(text, self.limits.max_line_chars)
        now = utcnow()
        with self._lock:
            # past the cap, nothing needs storing but the one line that brings the marker
            room = self.limits.max_lines + 1 - self._sent - len(self._pending)
            if self._full or self._closed or room <= 0:
                return
            first = not self._pending
            self._written = True
            self._pending.extend((now, stream, line) for line in lines[:room])
            if first:
                self.due = time.monotonic() + FLUSH_INTERVAL
            full_batch = len(self._pending) >= FLUSH_LINES
        if full_batch:
            self.flush()
        elif first:
            _flusher().schedule(self)

    def flush(self, wake: bool = True) -> None:
        """Store what is buffered now and (``wake``) wake the followers."""
        with self._storing:
            with self._lock:
                batch, self._pending, self.due = self._pending, [], None
            if not batch:
                return
            try:
                done = append(
                    self.db,
                    self.task_id,
                    batch,
                    cap=self.limits.max_lines,
                    marker=self.limits.marker,
                    attempt=self.attempt,
                    durable=False,  # the result's durable commit flushes it with itself
                )
            except Exception as exc:
                log.warning("task_log_write_failed", lines=len(batch), error=repr(exc))
                return
            with self._lock:
                self._sent += len(batch)
                if done.full(self.limits.max_lines):
                    self._full, self._pending = True, []
            if done.stored and wake:
                self.signal.notify(self.task_id)

    def close(self) -> None:
        """Store the rest (waiting for a batch the flusher is storing); later writes are
        dropped. A log nobody wrote to has nothing to wait for. The last lines wake nobody:
        the attempt's end, moments later, does (its followers' poll sees it, and reads them)."""
        with self._lock:
            self._closed = True
            written = self._written
        if written:
            self.flush(wake=False)


class _Flusher:
    """The process's one thread that stores buffers once they are due, looking every
    ``FLUSH_TICK``: a log registers without waking it, so an attempt that writes a few lines
    and ends costs no thread switch. Started by the first log that needs it (never, in a
    process whose attempts write nothing)."""

    def __init__(self) -> None:
        self._waiting: set[AttemptLog] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="omoi-task-logs", daemon=True).start()

    def schedule(self, attempt_log: AttemptLog) -> None:
        with self._lock:
            self._waiting.add(attempt_log)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_TICK)
            now = time.monotonic()
            with self._lock:  # a log whose due is gone was stored meanwhile: nothing to do
                due = {a for a in self._waiting if a.due is None or a.due <= now}
                self._waiting -= due
            for attempt_log in due:
                attempt_log.flush()


_flushers: dict[int, _Flusher] = {}
_flushers_lock = threading.Lock()


def _flusher() -> _Flusher:
    """This process's flusher (a forked child starts its own: threads do not survive fork)."""
    with _flushers_lock:
        pid = os.getpid()
        if pid not in _flushers:
            _flushers.clear()
            _flushers[pid] = _Flusher()
        return _flushers[pid]


def post(
    db: Database,
    signal: Signal,
    task_id: uuid.UUID,
    lease: uuid.UUID,
    lines: list[str],
    stream: str,
    limits: LogLimits,
) -> Appended:
    """An external agent's lines for the attempt its lease holds, stored durably before the
    answer; refused (``Conflict``), with nothing written, when the lease no longer holds."""
    now = utcnow()
    rows = [(now, stream, line) for text in lines for line in lines_of(text, limits.max_line_chars)]
    done = append(db, task_id, rows, cap=limits.max_lines, marker=limits.marker, lease=lease)
    if not done.held:
        with db.connect() as conn:
            exists = conn.execute(select(tasks.c.id).where(tasks.c.id == task_id)).first()
        if exists is None:
            raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
        raise Conflict(
            f"the lease no longer holds task {task_id}: its log takes lines only from the "
            "attempt's holder; nothing was written",
            {"task_id": str(task_id)},
            code="lease_not_held",
        )
    if done.stored:
        signal.notify(task_id)
    return done


def sweep(db: Database, retention: float, batch: int = RETENTION_BATCH) -> int:
    """Delete log lines older than ``retention`` seconds, ``batch`` at a time, each batch a
    short transaction of its own (the appends of running attempts never wait long for it),
    at most ``RETENTION_BATCHES`` a round."""
    cutoff = utcnow() - timedelta(seconds=retention)
    key = tuple_(task_logs.c.task_id, task_logs.c.attempt, task_logs.c.seq)
    old = select(task_logs.c.task_id, task_logs.c.attempt, task_logs.c.seq).where(
        task_logs.c.at < cutoff
    )
    deleted = 0
    for _ in range(RETENTION_BATCHES):
        with db.connect() as conn, sweep_lock(conn, "logs") as got:
            if not got:
                break
            gone = conn.execute(delete(task_logs).where(key.in_(old.limit(batch))))
        deleted += gone.rowcount
        if gone.rowcount < batch:
            break
    return deleted
