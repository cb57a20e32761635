"""Fixtures on real services: a throw-away PostgreSQL database, a Redis database, prefork
worker subprocesses. ``OMOI_TEST_PG_URL`` / ``OMOI_TEST_REDIS_URL`` point elsewhere."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import delete

from omoi.config import Settings
from omoi.persistence import Database, Ticket
from omoi.persistence.migrate import upgrade
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import NullDispatcher
from tests.support.api import ADMIN_TOKEN, make_app
from tests.support.invariants import violations
from tests.support.procs import ROOT, Proc, start_worker
from tests.support.units import TEST_WORKFLOWS

PG_ADMIN = os.environ.get("OMOI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OMOI_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

# Short intervals so recovery paths run within a test's patience.
TEST_ENV = {
    "OMOI_SWEEP_INTERVAL": "1",
    "OMOI_OUTBOX_REPUBLISH_AGE": "2",
    "OMOI_VISIBILITY_TIMEOUT": "60",
    "OMOI_TIME_LIMIT_GRACE": "2",
    "OMOI_RETRY_ETA_MAX": "2",
    "OMOI_HEARTBEAT_INTERVAL": "1",
    "OMOI_HEARTBEAT_TIMEOUT": "4",
    "OMOI_WORKFLOWS_DIR": str(TEST_WORKFLOWS),
    "OMOI_HANDLERS": "tests.support.handlers,examples.handlers",
    # every API process of the session makes this an admin token; the CLI sends it
    "OMOI_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
    "OMOI_TOKEN": ADMIN_TOKEN,
    "OMOI_RATE_LIMIT": "1000/second",
    "OMOI_UNAUTHENTICATED_RATE_LIMIT": "1000/second",
    # the session's workers run shell and http tasks (test_exec starts one that does not)
    "OMOI_ENABLE_TASK_TYPES": "shell,http",
}


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("omoi")


@contextmanager
def migrated_database() -> Iterator[str]:
    """A new database on the test server, migrated to head, dropped afterwards."""
    name = f"omoi_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    upgrade(url)
    try:
        yield url
        assert_consistent(url)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def assert_consistent(url: str, since: datetime | None = None) -> None:
    """Fail on any DAG counter that disagrees with the rows it counts (tests/support/invariants)."""
    db = Database(url)
    try:
        found = violations(db, since)
    finally:
        db.dispose()
    assert not found, "inconsistent DAG counters:\n" + "\n".join(found)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database() as url:
        yield url


@pytest.fixture(autouse=True)
def consistent_counters(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test on the session's database, its tickets' counters are checked."""
    if "database_url" not in request.fixturenames:
        yield
        return
    started = utcnow()
    yield
    assert_consistent(request.getfixturevalue("database_url"), started)


@pytest.fixture()
def fresh_database_url() -> Iterator[str]:
    """A database of the test's own (no other test's rows, tokens or sweeps)."""
    with migrated_database() as url:
        yield url


def own_store(url: str, settings: Settings) -> Iterator[tuple[Database, Any]]:
    """A database of its own and an API on it that publishes nothing."""
    db = Database(url)
    local = dataclasses.replace(settings, database_url=url)
    yield db, make_app(local, db=db, dispatcher=NullDispatcher()).test_client()
    db.dispose()


@pytest.fixture()
def sqlite(tmp_path: Path, settings: Settings) -> Iterator[tuple[Database, Any]]:
    """The embedded default: a SQLite file of the test's own."""
    url = f"sqlite:///{tmp_path / 'omoi.sqlite'}"
    upgrade(url)
    yield from own_store(url, settings)
    assert_consistent(url)


@pytest.fixture()
def pg_store(settings: Settings) -> Iterator[tuple[Database, Any]]:
    """A PostgreSQL database of the test's own."""
    with migrated_database() as url:
        yield from own_store(url, settings)


@pytest.fixture(params=["pg_store", "sqlite"])
def store(request: pytest.FixtureRequest) -> tuple[Database, Any]:
    """Each database omoi runs on, of the test's own, with a quiet API."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def env(database_url: str, tmp_root: Path) -> dict[str, str]:
    """The environment every omoi process of this test session runs with."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    return {
        **base,
        **TEST_ENV,
        "OMOI_DATABASE_URL": database_url,
        "OMOI_BROKER_URL": REDIS_URL,
        "OMOI_DATA_DIR": str(tmp_root / "data"),
        "OMOI_TEST_EFFECTS_URL": REDIS_URL,
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    return make_app(settings, db=db)


@pytest.fixture()
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture(scope="module")
def api_client(settings: Settings, db: Database) -> Iterator[Any]:
    """An API that publishes nothing, for tests of the HTTP contract alone. The tickets it
    creates are deleted afterwards so no later sweep runs them."""
    started = utcnow()
    yield make_app(settings, db=db, dispatcher=NullDispatcher()).test_client()

    def purge() -> None:
        with db.session() as session:
            session.execute(delete(Ticket).where(Ticket.created_at >= started))

    db.retry(purge)  # a worker may still be finishing one of the module's tickets


@pytest.fixture(scope="session")
def worker(env: dict[str, str], tmp_root: Path, redis_client: redis.Redis) -> Iterator[Proc]:
    """One prefork worker (2 children) shared by the execution tests."""
    proc, _ = start_worker(env, tmp_root, concurrency=2)
    yield proc
    proc.stop()
