"""The composition root: each process's objects built once, on first use, sized for its role."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import pytest

from omoi.broker.dispatcher import CeleryDispatcher
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.workflow import WorkflowError
from omoi.services.attempts import Handler
from omoi.services.dispatcher import NullDispatcher
from omoi.services.errors import Invalid
from omoi.services.failures import RetryPolicy


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "OMOI_DATA_DIR": str(tmp_path),
            "OMOI_DB_POOL_SIZE": "7",
            "OMOI_RETRY_BACKOFF": "3",
            "OMOI_RETRY_BACKOFF_MAX": "30",
            "OMOI_RETRY_ETA_MAX": "9",
            "OMOI_HANDLERS": "json,csv",
            "OMOI_ENABLE_TASK_TYPES": "http",
        }
    )


def test_each_object_is_built_once(settings: Settings) -> None:
    root = Root(settings, Role.API)
    for name in ("db", "celery", "producer", "dispatcher", "policy", "workflows", "uow"):
        assert getattr(root, name) is getattr(root, name), name
    assert root.dispatcher is root.producer
    assert (root.uow.db, root.uow.dispatcher, root.uow.workflows) == (
        root.db,
        root.dispatcher,
        root.workflows,
    )
    assert root.producer.app is root.celery


@pytest.mark.parametrize(
    ("role", "pool_size", "pre_ping"),
    [(Role.API, 7, True), (Role.WORKER, 2, False), (Role.BEAT, 2, True), (Role.CLI, 1, True)],
)
def test_the_role_sizes_the_database_pool(
    settings: Settings, role: Role, pool_size: int, pre_ping: bool
) -> None:
    db = Root(settings, role).db
    assert (db.url, db.pool_size, db.pre_ping) == (settings.database_url, pool_size, pre_ping)


def test_only_a_worker_waits_out_a_database_outage(settings: Settings) -> None:
    """A worker must store a finished handler's result; the others answer or fail fast."""
    assert Root(settings, Role.WORKER).db.outage_patience == settings.db_outage_patience == 300
    assert {Root(settings, r).db.outage_patience for r in (Role.API, Role.BEAT, Role.CLI)} == {1.0}


def test_only_the_api_names_its_celery_app_apart(settings: Settings) -> None:
    assert Root(settings, Role.API).celery.main == "omoi-api"
    assert {Root(settings, role).celery.main for role in (Role.WORKER, Role.BEAT)} == {"omoi"}
    assert Root(settings, Role.API).celery.conf.broker_url == settings.broker_url


def test_a_root_that_only_reads_the_database_builds_nothing_else(settings: Settings) -> None:
    root = Root(settings, Role.CLI)
    assert root.db is not None
    built = {"celery", "producer", "dispatcher", "policy", "workflows", "uow"}
    assert set(vars(root)) & built == set()


def test_a_given_database_and_dispatcher_are_used_and_the_producer_still_pings(
    settings: Settings,
) -> None:
    db, dispatcher = Root(settings, Role.CLI).db, NullDispatcher()
    root = Root(settings, Role.API, db=db, dispatcher=dispatcher)
    assert root.db is db
    assert root.dispatcher is dispatcher
    assert isinstance(root.producer, CeleryDispatcher)
    assert root.producer.exec_types == settings.exec_types
    assert root.producer.grace == settings.time_limit_grace


def test_the_retry_policy_comes_from_the_settings(settings: Settings) -> None:
    assert Root(settings, Role.BEAT).policy == RetryPolicy(3.0, 30.0, 9.0)


def test_the_workflows_the_use_cases_look_up_are_the_roots(
    settings: Settings, tmp_path: Path
) -> None:
    """Each root holds its own set: a second root with a workflows directory of its own adds
    to it without changing what the first one's use cases see."""
    root = Root(settings, Role.API)
    assert root.uow.workflows.get("software-dev").name == "software-dev"
    own = tmp_path / "flows"
    own.mkdir()
    (own / "mine.yaml").write_text(
        (Path(__file__).parents[2] / "omoi/workflows/software-dev.yaml")
        .read_text()
        .replace("name: software-dev", "name: mine")
    )
    other = Root(
        Settings.from_env({"OMOI_DATA_DIR": str(tmp_path), "OMOI_WORKFLOWS_DIR": str(own)}),
        Role.API,
    )
    assert "mine" in [w.name for w in other.workflows.all()]
    with pytest.raises(Invalid, match="unknown workflow 'mine'"):
        root.workflows.get("mine")


def test_a_bad_workflows_directory_stops_the_root(settings: Settings, tmp_path: Path) -> None:
    bad = Settings.from_env({"OMOI_DATA_DIR": str(tmp_path), "OMOI_WORKFLOWS_DIR": "/nowhere"})
    with pytest.raises(WorkflowError, match="not a directory"):
        Root(bad, Role.WORKER).workflows  # noqa: B018


class Registry:
    """Records what the root asks of the worker's handler registry."""

    def __init__(self) -> None:
        self.loaded: list[list[str]] = []
        self.asked: list[tuple[Collection[str], Collection[str]]] = []

    def load(self, modules: Iterable[str]) -> None:
        self.loaded.append(list(modules))

    def resolver(
        self, exec_types: Collection[str], enabled: Collection[str]
    ) -> Callable[[str], Handler | None]:
        self.asked.append((exec_types, enabled))
        return lambda task_type: None


def test_the_handler_modules_load_once_into_the_given_registry(settings: Settings) -> None:
    registry = Registry()
    root = Root(settings, Role.WORKER, handlers=registry)
    assert root.resolve is root.resolve
    assert registry.loaded == [["json", "csv"]]
    assert registry.asked == [(settings.exec_types, ("http",))]


def test_a_root_without_a_registry_resolves_no_handler(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="no handler registry"):
        Root(settings, Role.API).resolve  # noqa: B018
