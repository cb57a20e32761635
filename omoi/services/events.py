"""Reading the event log: a page by cursor, or a live feed that follows it.

Every event names the API token whose request made it (``actor_token_id``, ``actor_name``;
null for workers' and beat's own changes); ``actor`` filters on either.

Event ids come from a sequence, and two transactions can commit their events out of id order;
a follower that only asked for ``id > last`` could skip an event committed late. ``follow``
therefore re-reads a window below its cursor and emits only ids it has not emitted yet.

``EventHub`` is one such follower of the whole log per process, fanned out to every live
stream of that process: 500 streams cost one poll of the database, not 500. Each stream
catches up from the database by itself, then takes what the hub read, through the same
window rule, so it keeps ``follow``'s guarantees.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from sqlalchemy import func, select

from omoi.persistence import Database
from omoi.persistence.statements import events
from omoi.services import tokens

LOOKBACK = 1000  # ids below the cursor re-read for late commits
PAGE = 500  # rows read per query
log = structlog.get_logger(__name__)


def _query(
    ticket_id: uuid.UUID | None,
    entity_id: uuid.UUID | None,
    type_prefix: str | None,
    actor: str | None,
) -> Any:
    query = select(events).order_by(events.c.id)
    if actor:
        query = query.where(_by(actor))
    if ticket_id is not None:
        query = query.where(events.c.ticket_id == ticket_id)
    if entity_id is not None:
        query = query.where(events.c.entity_id == entity_id)
    if type_prefix:
        query = query.where(events.c.type.startswith(type_prefix, autoescape=True))
    return query


def _actor_column(actor: str) -> tuple[str, Any]:
    """A token id names that token's events, anything else a token name's: each is one
    ordered scan of its partial index (an OR of the two would read and sort all of them)."""
    try:
        return "actor_token_id", uuid.UUID(actor)
    except ValueError:
        return "actor_name", actor


def _by(actor: str) -> Any:
    column, value = _actor_column(actor)
    return events.c[column] == value


def latest_id(db: Database) -> int:
    """The newest event's id (0 for none): where a live view starts following."""
    with db.connect() as conn:
        return int(conn.execute(select(func.max(events.c.id))).scalar() or 0)


def list_events(
    db: Database,
    *,
    ticket_id: uuid.UUID | None = None,
    entity_id: uuid.UUID | None = None,
    type: str | None = None,
    actor: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[Any], int | None]:
    """Oldest first after ``after``; returns the page and the cursor for the next one."""
    query = _query(ticket_id, entity_id, type, actor).limit(limit + 1)
    if after is not None:
        query = query.where(events.c.id > after)
    with db.connect() as conn:
        rows = list(conn.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


class Seen:
    """What a follower has emitted: ids above ``floor`` (its ``after``) only, and within
    ``LOOKBACK`` below the highest id emitted, each once, so a late commit is emitted once."""

    def __init__(self, after: int) -> None:
        self.floor = self.high = after
        self.emitted: set[int] = set()

    @property
    def window(self) -> int:
        """Ids at or below this are never emitted (already passed, or too late)."""
        return max(self.floor, self.high - LOOKBACK)

    def take(self, event_id: int) -> bool:
        """Whether ``event_id`` is new to this follower (and, if so, record it)."""
        if event_id <= self.window or event_id in self.emitted:
            return False
        self.emitted.add(event_id)
        self.high = max(self.high, event_id)
        return True

    def prune(self) -> None:
        self.emitted = {i for i in self.emitted if i > self.high - LOOKBACK}


def _read(db: Database, base: Any, seen: Seen) -> tuple[list[Any], bool]:
    """One poll: the rows committed late within the window that ``seen`` has not emitted, then
    up to ``PAGE`` rows above its highest id; and whether more may be waiting above them.
    The window's ids are read only when it holds more rows than were emitted from it (the
    log is append-only), so a quiet poll reads a count, not a thousand ids."""
    window = (events.c.id > seen.window, events.c.id <= seen.high)
    emitted = sum(1 for i in seen.emitted if seen.window < i <= seen.high)
    with db.connect() as conn:
        rows: list[Any] = []
        counted = base.with_only_columns(func.count()).order_by(None).where(*window)
        if conn.execute(counted).scalar_one() > emitted:
            recent = conn.execute(base.with_only_columns(events.c.id).where(*window)).scalars()
            late = [i for i in recent if i not in seen.emitted]
            rows = list(conn.execute(base.where(events.c.id.in_(late)))) if late else []
        new = list(conn.execute(base.where(events.c.id > seen.high).limit(PAGE)))
    return rows + new, len(new) == PAGE


def follow(
    db: Database,
    *,
    ticket_id: uuid.UUID | None = None,
    entity_id: uuid.UUID | None = None,
    type: str | None = None,
    actor: str | None = None,
    after: int | None = None,
    poll: float = 0.25,
    keep_going: Callable[[], bool] = lambda: True,
) -> Iterator[Any | None]:
    """Yield events as they are committed (``None`` when a poll found nothing, so the caller
    can send keep-alives), starting after ``after`` (0: from the beginning)."""
    seen = Seen(after or 0)
    base = _query(ticket_id, entity_id, type, actor)
    while keep_going():
        rows, _ = _read(db, base, seen)
        for row in rows:
            if seen.take(row.id):
                yield row
        seen.prune()
        if not rows:
            yield None
            time.sleep(poll)


def matches(
    row: Any,
    ticket_id: uuid.UUID | None,
    entity_id: uuid.UUID | None,
    type_prefix: str | None,
    actor: str | None,
) -> bool:
    """``_query``'s filter, applied to a row in hand."""
    return (
        (ticket_id is None or row.ticket_id == ticket_id)
        and (entity_id is None or row.entity_id == entity_id)
        and (not type_prefix or row.type.startswith(type_prefix))
        and (not actor or getattr(row, _actor_column(actor)[0]) == _actor_column(actor)[1])
    )


class EventHub:
    """One follower of the whole event log per process, shared by every stream in it.

    A thread (a greenlet under gevent) follows the log and appends each row to a ring of the
    last ``capacity`` rows, numbered in the order it read them; each stream keeps its place
    in that numbering and wakes when rows arrive. The thread runs while streams are open and
    stops ``linger`` seconds after the last one ends. A stream that falls further behind
    than the ring holds (a slow reader) catches up from the database again, as it did when it
    opened, so it never misses a row: the ring is a shortcut, never the only copy."""

    def __init__(
        self, db: Database, poll: float = 0.25, capacity: int = 10_000, linger: float = 30.0
    ) -> None:
        self.db = db
        self.poll = poll
        self.linger = linger
        self._ring: deque[Any] = deque(maxlen=capacity)
        self._next = 0  # the number the next row read gets
        self._changed = threading.Condition()
        self._streams = 0
        self._idle_since = 0.0
        self._runner: tuple[int, threading.Thread] | None = None  # (pid, thread)

    @property
    def streams(self) -> int:
        """How many streams follow the hub now."""
        return self._streams

    def follow(
        self,
        *,
        ticket_id: uuid.UUID | None = None,
        entity_id: uuid.UUID | None = None,
        type: str | None = None,
        actor: str | None = None,
        after: int | None = None,
        keep_going: Callable[[], bool] = lambda: True,
        tick: float = 0.5,
    ) -> Iterator[list[Any]]:
        """What ``follow`` yields, for one stream, in batches: the events that arrived
        together (sent in one write), and an empty batch at least every ``tick`` seconds
        while nothing matches (for keep-alives and the caller's checks)."""
        seen = Seen(after or 0)
        base = _query(ticket_id, entity_id, type, actor)
        place = self._open()
        try:
            yield from self._catch_up(base, seen)
            while keep_going():
                rows, place = self._wait(place, tick)
                if rows is None:  # fell out of the ring: what it missed is in the database
                    yield from self._catch_up(base, seen)
                    continue
                fresh = [
                    row
                    for row in rows
                    if matches(row, ticket_id, entity_id, type, actor) and seen.take(row.id)
                ]
                seen.prune()
                yield fresh
        finally:
            self._close()

    def _catch_up(self, base: Any, seen: Seen) -> Iterator[list[Any]]:
        """Read the database until this stream has every committed row the hub's ring may no
        longer hold; rows committed meanwhile are in the ring after the stream's place."""
        more = True
        while more:
            rows, more = _read(self.db, base, seen)
            fresh = [row for row in rows if seen.take(row.id)]
            seen.prune()
            if fresh:
                yield fresh

    def _wait(self, place: int, tick: float) -> tuple[list[Any] | None, int]:
        """The rows read since ``place`` (waiting up to ``tick`` for some) and the new place;
        ``None`` when the ring no longer holds them all."""
        with self._changed:
            if self._next == place:
                self._changed.wait(tick)
            missed = self._next - place
            if missed > len(self._ring):
                return None, self._next
            newest_first = list(itertools.islice(reversed(self._ring), missed))
            return newest_first[::-1], self._next

    def _open(self) -> int:
        """Count a stream in, start the follower if it is not running; the stream's place."""
        with self._changed:
            self._streams += 1
            if self._runner is None or self._runner[0] != os.getpid():  # none, or pre-fork
                thread = threading.Thread(target=self._run, name="omoi-event-hub", daemon=True)
                self._runner = (os.getpid(), thread)
                thread.start()
            return self._next

    def _close(self) -> None:
        with self._changed:
            self._streams -= 1
            if not self._streams:
                self._idle_since = time.monotonic()

    def _wanted(self) -> bool:
        """Whether to keep following; when not, the runner is gone before the lock is let go,
        so a stream opening at that moment starts a new one."""
        with self._changed:
            if self._streams or time.monotonic() - self._idle_since < self.linger:
                return True
            self._runner = None
            return False

    def _run(self) -> None:
        """Follow the whole log, from ``LOOKBACK`` below its head (so a row committed late
        just before a stream opened still reaches it), until no stream has wanted it for
        ``linger`` seconds. A database error starts it over a second later from where it
        was; rows it reads twice are dropped by each stream's ``Seen``."""
        start: int | None = None
        while True:
            try:
                if start is None:
                    start = max(0, latest_id(self.db) - LOOKBACK)
                for row in follow(self.db, after=start, poll=self.poll, keep_going=self._wanted):
                    if row is not None:
                        with self._changed:
                            self._ring.append(row)
                            self._next += 1
                            self._changed.notify_all()
                        start = max(start, row.id - LOOKBACK)
                return
            except Exception as exc:  # the database restarting: follow again shortly
                log.warning("event_hub_failed", error=repr(exc))
                time.sleep(1.0)
                if not self._wanted():
                    return


class StreamSlots:
    """How many streams each token holds open in this process, so that one token cannot
    hold every connection the process has; and which of those tokens were revoked since,
    so their streams end. One query per ``interval`` checks every token holding a stream,
    made by the first stream to ask once it is due while the others go on with the answer
    before: a revocation is seen within ``interval`` plus the asking stream's own period."""

    def __init__(self, db: Database, cap: int, interval: float) -> None:
        self.db = db
        self.cap = cap
        self.interval = interval
        self._held: dict[uuid.UUID, int] = {}
        self._revoked: set[uuid.UUID] = set()
        self._checked = time.monotonic()
        self._checking = False
        self._lock = threading.Lock()

    def take(self, token_id: uuid.UUID) -> bool:
        """One more stream for the token, unless it already holds ``cap``."""
        with self._lock:
            held = self._held.get(token_id, 0)
            if held >= self.cap:
                return False
            self._held[token_id] = held + 1
            return True

    def give(self, token_id: uuid.UUID) -> None:
        with self._lock:
            left = self._held.pop(token_id, 0) - 1
            if left > 0:
                self._held[token_id] = left

    def revoked(self, token_id: uuid.UUID) -> bool:
        """Whether the token was revoked (as of at most ``interval`` ago)."""
        with self._lock:
            due = not self._checking and time.monotonic() - self._checked >= self.interval
            if due:
                self._checking = True
                held = list(self._held)
        if due:
            try:
                live = tokens.active_among(self.db, held)
                with self._lock:
                    self._revoked = set(held) - live
                    self._checked = time.monotonic()
            finally:
                with self._lock:
                    self._checking = False
        return token_id in self._revoked
