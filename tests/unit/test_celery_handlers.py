"""A Celery app's tasks as omoi handlers (``omoi.worker.canvas``): registered as
``celery:<name>``, run with a request of their own, their exceptions classified by Celery's
rules. A context made by hand: no server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omoi.domain.errors import TaskError, classify
from omoi.worker.canvas import CeleryAppError, handlers_of, load_app

APP = "tests.support.celery_app"
HANDLERS = handlers_of(load_app(f"{APP}:app"))


def call(name: str, *args: Any, attempt: int = 1, parent: Any = None) -> Any:
    from omoi.services.context import TaskContext

    payload = {"args": list(args), "kwargs": {}, "input": None}
    ctx = TaskContext(uuid.uuid4(), uuid.uuid4(), "k", name, attempt, payload, None)
    return HANDLERS[f"celery:{APP}.{name}"](ctx)


def failure(name: str, *args: Any, attempt: int = 1) -> TaskError:
    with pytest.raises(Exception) as caught:
        call(name, *args, attempt=attempt)
    return classify(caught.value)


def test_every_task_of_the_app_but_celerys_own_is_a_handler() -> None:
    assert f"celery:{APP}.add" in HANDLERS
    assert not [t for t in HANDLERS if t.startswith("celery:celery.")]
    assert call("add", 2, 3) == 5


def test_a_bound_task_sees_a_request_with_an_id_and_its_retries() -> None:
    assert call("flaky", 7, 1, attempt=2) == {"x": 7, "retries": 1, "has_id": True}


@pytest.mark.parametrize(
    ("name", "args", "attempt", "category", "type_"),
    [
        ("flaky", (1, 1), 1, "transient", "Retry"),  # self.retry()
        ("auto", (1,), 1, "transient", "Retry"),  # autoretry_for
        ("auto", (1,), 2, "permanent", "Flaky"),  # past max_retries: the exception, final
        ("lookup", ("z",), 1, "permanent", "KeyError"),  # throws
        ("reject", (1,), 1, "permanent", "Reject"),
        ("boom", (1,), 1, "permanent", "RuntimeError"),  # final unless it asks to retry
    ],
)
def test_exceptions_keep_celerys_meaning(
    name: str, args: tuple[Any, ...], attempt: int, category: str, type_: str
) -> None:
    error = failure(name, *args, attempt=attempt)
    assert (str(error.category), error.type) == (category, type_)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no.such.module:app", "cannot import 'no.such.module'"),
        (f"{APP}:nothing", "has no Celery app named 'nothing'"),
        ("json", "has no Celery app named app or celery"),
    ],
)
def test_a_bad_celery_app_setting_is_named(spec: str, message: str) -> None:
    with pytest.raises(CeleryAppError, match=message):
        load_app(spec)
