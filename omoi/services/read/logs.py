"""Reading an attempt's log: a page after a line number, or a live feed until the attempt ends.

``LogHub`` is the process's one watcher of the tasks its streams follow. It wakes a task's
streams when a writer says it stored lines (a ``LogSignal`` notification, within
milliseconds) and when one poll of the database, every ``poll`` seconds for all followed
tasks at once, finds a task whose attempt, status or last line changed: the poll catches a
lost notification and an attempt's end, which nobody announces. A woken stream re-reads the
database after its last line, so what it sends is what was committed, each line once, in
order; an idle stream costs no statement of its own.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection, func, select

from omoi.domain.enums import TERMINAL_TASK_STATUSES
from omoi.persistence import Database
from omoi.persistence.logs import MARKER_STREAM, task_logs
from omoi.persistence.statements import tasks
from omoi.services.errors import NotFound

PAGE = 1000  # lines a stream reads per statement
log = structlog.get_logger(__name__)

LINE_COLUMNS = (
    task_logs.c.seq,
    task_logs.c.attempt,
    task_logs.c.at,
    task_logs.c.stream,
    task_logs.c.line,
)


@dataclass(frozen=True)
class AttemptState:
    """Where a task is, as a reader of attempt ``attempt``'s log sees it."""

    attempt: int
    task_attempt: int
    status: str

    @property
    def ended(self) -> bool:
        """No more lines will come: the task went on to a later attempt, or ended (after
        its worker stored the attempt's last lines, or without running it)."""
        return self.task_attempt > self.attempt or self.status in TERMINAL_TASK_STATUSES


@dataclass
class LogPage:
    task_id: uuid.UUID
    attempt: int
    lines: list[Any]
    next_after: int
    truncated: bool


@dataclass
class Batch:
    """What a feed yields: the lines that arrived together (none, when it only ticks); the
    last batch has ``ended`` set and the task's status then (``None``: it was deleted)."""

    lines: list[Any] = field(default_factory=list)
    ended: bool = False
    status: str | None = None
    truncated: bool = False


def _state(conn: Connection, task_id: uuid.UUID, attempt: int | None) -> AttemptState | None:
    """The attempt to read (``None``: the latest, or the first one before it runs); ``None``
    for no such task. NotFound for an attempt the task has not reached."""
    row = conn.execute(
        select(tasks.c.attempt, tasks.c.status).where(tasks.c.id == task_id)
    ).one_or_none()
    if row is None:
        return None
    latest = max(row.attempt, 1)
    if attempt is not None and attempt > latest:
        raise NotFound(
            f"task {task_id} has no attempt {attempt}; its latest is {latest}",
            {"task_id": str(task_id), "latest_attempt": latest},
        )
    return AttemptState(attempt or latest, row.attempt, row.status)


def _found(conn: Connection, task_id: uuid.UUID, attempt: int | None) -> AttemptState:
    """``_state``, NotFound for no such task."""
    state = _state(conn, task_id, attempt)
    if state is None:
        raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
    return state


def _lines(conn: Connection, task_id: uuid.UUID, attempt: int, after: int, limit: int) -> list[Any]:
    return list(
        conn.execute(
            select(*LINE_COLUMNS)
            .where(
                task_logs.c.task_id == task_id,
                task_logs.c.attempt == attempt,
                task_logs.c.seq > after,
            )
            .order_by(task_logs.c.seq)
            .limit(limit)
        )
    )


def _truncated(conn: Connection, task_id: uuid.UUID, attempt: int) -> bool:
    """The marker is always an attempt's last line."""
    last = conn.execute(
        select(task_logs.c.stream)
        .where(task_logs.c.task_id == task_id, task_logs.c.attempt == attempt)
        .order_by(task_logs.c.seq.desc())
        .limit(1)
    ).scalar_one_or_none()
    return last == MARKER_STREAM


def page(
    db: Database,
    task_id: uuid.UUID,
    *,
    attempt: int | None = None,
    after: int = 0,
    limit: int = PAGE,
) -> LogPage:
    """Up to ``limit`` lines of the attempt (default: the latest) after line ``after``;
    ``next_after`` is the ``after`` of the next page."""
    with db.connect() as conn:
        state = _found(conn, task_id, attempt)
        lines = _lines(conn, task_id, state.attempt, after, limit)
        truncated = _truncated(conn, task_id, state.attempt)
    next_after = lines[-1].seq if lines else after
    return LogPage(task_id, state.attempt, lines, next_after, truncated)


def check_attempt(db: Database, task_id: uuid.UUID, attempt: int | None) -> int:
    """The attempt a stream of the task's log follows; NotFound for no such task or attempt."""
    with db.connect() as conn:
        return _found(conn, task_id, attempt).attempt


class LogHub:
    """The streams of one process following task logs, and what wakes them: notifications
    (``listen`` starts delivering them to ``wake``, once per process) and one poll of the
    followed tasks every ``poll`` seconds while any is followed."""

    def __init__(
        self,
        db: Database,
        listen: Callable[[Callable[[uuid.UUID], None]], None] = lambda wake: None,
        poll: float = 0.5,
    ) -> None:
        self.db = db
        self.poll = poll
        self._listen = listen
        self._changed = threading.Condition()
        self._followers: dict[uuid.UUID, int] = {}  # task → streams following it
        self._versions: dict[uuid.UUID, int] = {}  # task → wake-ups so far
        self._seen: dict[uuid.UUID, tuple[Any, ...]] = {}  # the poll's last look at each
        self._watching: int | None = None  # the pid whose watcher runs
        self._listening: int | None = None  # the pid that listens

    def wake(self, task_id: uuid.UUID) -> None:
        """Lines of the task may have been stored: its streams re-read the database."""
        with self._changed:
            if task_id in self._versions:
                self._versions[task_id] += 1
                self._changed.notify_all()

    def follow(
        self,
        task_id: uuid.UUID,
        attempt: int,
        *,
        after: int = 0,
        keep_going: Callable[[], bool] = lambda: True,
        tick: float = 0.5,
    ) -> Iterator[Batch]:
        """The attempt's lines after ``after`` as they are stored, in batches (an empty one
        at least every ``tick`` seconds while nothing arrives, for keep-alives and the
        caller's checks); the last batch, once the attempt ended and every line of it was
        sent, has ``ended`` set."""
        self._open(task_id)
        try:
            seen = -1  # the wake-ups read so far: the first look reads the database
            while keep_going():
                woken = self._wait(task_id, seen, tick)
                if woken == seen:
                    yield Batch()
                    continue
                seen = woken
                for batch in self._read(task_id, attempt, after):
                    after = batch.lines[-1].seq if batch.lines else after
                    yield batch
                    if batch.ended:
                        return
        finally:
            self._close(task_id)

    def _wait(self, task_id: uuid.UUID, seen: int, tick: float) -> int:
        """The task's wake-ups so far, once more than ``seen`` came or ``tick`` passed."""
        with self._changed:
            self._changed.wait_for(lambda: self._versions[task_id] != seen, tick)
            return self._versions[task_id]

    def _read(self, task_id: uuid.UUID, attempt: int, after: int) -> Iterator[Batch]:
        """Everything stored after ``after``, a page at a time; the end, if it came. The state
        is read before the lines: an attempt seen ended had stored all its lines by then."""
        while True:
            with self.db.connect() as conn:
                state = _state(conn, task_id, attempt)
                if state is None:  # deleted with its ticket
                    yield Batch(ended=True)
                    return
                lines = _lines(conn, task_id, attempt, after, PAGE)
                ended = state.ended and len(lines) < PAGE
                truncated = ended and _truncated(conn, task_id, attempt)
            if lines or ended:
                yield Batch(lines, ended, state.status if ended else None, truncated)
            if len(lines) < PAGE:
                return
            after = lines[-1].seq

    def _open(self, task_id: uuid.UUID) -> None:
        pid = os.getpid()
        with self._changed:
            self._followers[task_id] = self._followers.get(task_id, 0) + 1
            self._versions.setdefault(task_id, 0)
            if self._watching != pid:  # none yet, or its thread stayed in the parent
                self._watching = pid
                threading.Thread(target=self._watch, name="omoi-log-hub", daemon=True).start()
            listen = self._listening != pid
            self._listening = pid
        if listen:
            self._listen(self.wake)

    def _close(self, task_id: uuid.UUID) -> None:
        with self._changed:
            self._followers[task_id] -= 1
            if not self._followers[task_id]:
                for held in (self._followers, self._versions, self._seen):
                    held.pop(task_id, None)

    def _watch(self) -> None:
        """Poll the followed tasks until none is; a database error is retried a poll later."""
        while True:
            with self._changed:
                followed = list(self._followers)
                if not followed:
                    self._watching = None  # under the lock: an opening stream starts another
                    return
            try:
                looks = _looks(self.db, followed)
            except Exception as exc:  # the database restarting: the next poll tries again
                log.warning("log_hub_poll_failed", error=repr(exc))
                looks = None
            if looks is not None:
                with self._changed:
                    changed = [
                        t
                        for t in followed
                        if t in self._versions and self._seen.get(t) != looks.get(t, ())
                    ]
                    for task_id in changed:
                        self._seen[task_id] = looks.get(task_id, ())
                        self._versions[task_id] += 1
                    if changed:
                        self._changed.notify_all()
            time.sleep(self.poll)


def _looks(db: Database, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
    """Each task's attempt, status and the last line of that attempt, in one statement."""
    last_line = (
        select(func.max(task_logs.c.seq))
        .where(task_logs.c.task_id == tasks.c.id, task_logs.c.attempt == tasks.c.attempt)
        .scalar_subquery()
    )
    with db.connect() as conn:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.attempt, tasks.c.status, last_line).where(
                tasks.c.id.in_(task_ids)
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows}
