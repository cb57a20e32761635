"""Engine and session factory, built on first use in each process (never at import, never shared
across a fork: a prefork child that inherited its parent's pool would share its sockets)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


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
    """Owns one engine per process; ``session()`` is the unit of work."""

    def __init__(self, url: str, pool_size: int = 10, pre_ping: bool = True) -> None:
        self.url = url
        self.pool_size = pool_size
        self.pre_ping = pre_ping
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

    def dispose(self) -> None:
        if self._pid == os.getpid():
            for engine in (self._engine, *self._fast.values()):
                if engine is not None:
                    engine.dispose()
        self._engine = None
        self._fast = {}
        self._sessions = None
