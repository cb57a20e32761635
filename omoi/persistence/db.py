"""Engine and session factory, built on first use in each process (never at import, never shared
across a fork: a prefork child that inherited its parent's pool would share its sockets)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure
DISCONNECT_SQLSTATES = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def disconnected(exc: BaseException) -> bool:
    """The database is unreachable or went away (as opposed to refusing the statement)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in DISCONNECT_SQLSTATES


def refused_data(exc: BaseException) -> bool:
    """The database refused a statement's values (a value jsonb cannot hold, a bind that
    could not be encoded): sending it again cannot help."""
    if isinstance(exc, DBAPIError):
        return isinstance(exc.orig, psycopg.DataError | sqlite3.DataError)
    return isinstance(exc, psycopg.DataError | StatementError)


def _sqlite_setup(engine: Engine) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE, so several embedded processes share one file."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Owns one engine per process, and how long its transactions wait out an outage.

    ``outage_patience`` is the seconds ``retry`` waits for a database that went away (a
    restart, a failover) before giving up. Workers wait long: a finished handler's result must
    be stored, not dropped. The API keeps it short and answers 503, so clients retry rather
    than hang."""

    def __init__(
        self, url: str, pool_size: int = 10, pre_ping: bool = True, outage_patience: float = 1.0
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.pre_ping = pre_ping
        self.outage_patience = outage_patience
        self._pid: int | None = None
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._fast: dict[bool, Engine] = {}  # durable or not: the two driver() pools

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            self._fast = {}
            self._engine = self._make_engine()
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            self._pid = os.getpid()
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _driver_url(self) -> str:
        if self.url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.url[len("postgresql://") :]
        return self.url

    def _make_engine(self) -> Engine:
        url = self._driver_url()
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            _sqlite_setup(engine)
            return engine
        return create_engine(
            url,
            pool_size=self.pool_size,
            max_overflow=self.pool_size,
            pool_pre_ping=self.pre_ping,
            pool_recycle=1800,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error."""
        self.engine  # noqa: B018 - builds the per-process engine
        assert self._sessions is not None
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core transaction, for hot paths that need no ORM identity map."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def driver(self, durable: bool = True) -> Iterator[Any]:
        """A pooled psycopg connection in autocommit mode, for the per-task single-statement
        units of work on PostgreSQL (SQLAlchemy's execution layer cost more than the SQL).
        ``durable=False`` commits without waiting for the WAL flush (``synchronous_commit =
        off``): for writes that a crash may lose because something else repairs them (the
        claim, see ``claims.claim``; the outbox stamp). Any later durable commit flushes
        them too.
        A connection that failed is invalidated rather than returned to the pool."""
        self.engine  # noqa: B018 - resets per-process state after a fork
        if durable not in self._fast:
            options = {} if durable else {"options": "-c synchronous_commit=off"}
            self._fast[durable] = create_engine(
                self._driver_url(),
                isolation_level="AUTOCOMMIT",
                pool_size=self.pool_size,
                max_overflow=self.pool_size,
                pool_reset_on_return=None,
                connect_args=options,
            )
        raw = self._fast[durable].raw_connection()
        try:
            yield raw.driver_connection
        finally:
            if raw.driver_connection.broken:
                raw.invalidate()
            raw.close()

    def retry(self, fn: Callable[[], T], attempts: int = 5) -> T:
        """Re-run a transaction that lost a deadlock or serialization race (``attempts``
        times), or whose database went away (until ``outage_patience`` runs out, backing off
        to 1 s)."""
        races = 0
        outage_deadline: float | None = None
        pause = 0.05
        while True:
            try:
                return fn()
            except (DBAPIError, psycopg.OperationalError) as exc:
                if disconnected(exc):
                    now = time.monotonic()
                    outage_deadline = outage_deadline or now + self.outage_patience
                    if now >= outage_deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                races += 1
                state = getattr(getattr(exc, "orig", exc), "sqlstate", None)
                if state not in RETRYABLE_SQLSTATES or races == attempts:
                    raise
                time.sleep(0.01 * races)

    def dispose(self) -> None:
        if self._pid == os.getpid():
            for engine in (self._engine, *self._fast.values()):
                if engine is not None:
                    engine.dispose()
        self._engine = None
        self._fast = {}
        self._sessions = None
