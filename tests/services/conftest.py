"""Fixtures for the use-case tests: the embedded SQLite engine, migrated once per session into
a template file that each test copies (a file copy, not a migration), a unit of work on it and
a dispatcher that records what the broker was told. No server: the fixtures of
``tests/conftest.py`` that reach PostgreSQL or Redis fail here, naming themselves, if a test
asks for one."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from omoi.persistence import Database
from omoi.persistence.migrate import upgrade
from omoi.services.unit_of_work import UnitOfWork
from tests.conftest import assert_consistent
from tests.support.units import Recorded, session_workflows, unit_of_work


def _needs_a_server(name: str, scope: str) -> Callable[[], None]:
    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload]
    def refused() -> None:
        pytest.fail(f"tests/services run without servers, and {name!r} needs one")

    return refused  # type: ignore[no-any-return]


# every fixture of tests/conftest.py that reaches a server depends on one of these
database_url = _needs_a_server("database_url", "session")
fresh_database_url = _needs_a_server("fresh_database_url", "function")
pg_store = _needs_a_server("pg_store", "function")
redis_client = _needs_a_server("redis_client", "session")


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, once per session."""
    path = tmp_path_factory.mktemp("services") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture()
def db(template: Path, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of the test's own; its DAG counters are checked afterwards."""
    path = tmp_path / "omoi.sqlite"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    database = Database(url)
    yield database
    database.dispose()
    assert_consistent(url)


@pytest.fixture()
def dispatcher() -> Recorded:
    return Recorded()


@pytest.fixture()
def uow(db: Database, dispatcher: Recorded) -> UnitOfWork:
    """The shipped workflows and the test ones (``gated``, ``fanin``)."""
    return unit_of_work(db, dispatcher, session_workflows())
