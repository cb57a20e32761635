"""A Celery user's canvases run by omoi: each canvas goes through raw Celery (its own prefork
worker, Redis db ``OMOI_TEST_CELERY_REDIS_URL`` as broker and result backend) and through
omoi (``Client.submit_canvas`` to a gunicorn API, an ``omoi worker --celery-app``), and the
two results are equal. Then what omoi adds: a failure names its task, retries run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import chain, chord, group

from omoi.client import CanvasFailed, Client
from omoi.domain.canvas import CanvasError
from tests.support import celery_app as user
from tests.support.api import ADMIN_TOKEN
from tests.support.procs import Proc, start_api, start_celery_worker, start_worker

APP = "tests.support.celery_app:app"


@pytest.fixture(scope="module")
def raw_celery(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """The user's app on raw Celery: a two-process prefork worker on its own Redis db."""
    redis.Redis.from_url(user.REDIS_URL).flushdb()
    proc = start_celery_worker(env, tmp_path_factory.mktemp("raw"), user.REDIS_URL)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def omoi_canvas(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Client, list[str]]]:
    """An API and a worker running the user's app's tasks, alone on a capability of its own;
    the client and the capabilities to submit with."""
    tmp = tmp_path_factory.mktemp("omoi-canvas")
    capability = f"canvas{uuid.uuid4().hex[:8]}"
    api, api_env = start_api(env, tmp)
    worker, _ = start_worker(env, tmp, capabilities=capability, celery_app=APP)
    yield Client(f"http://127.0.0.1:{api_env['OMOI_API_PORT']}", ADMIN_TOKEN), [capability]
    worker.stop()
    api.stop()


def through_both(canvas: Any, omoi: tuple[Client, list[str]]) -> tuple[Any, Any]:
    client, capabilities = omoi
    raw = canvas.clone().apply_async().get(timeout=30)
    ran = client.submit_canvas(canvas, "parity", capabilities=capabilities).get(timeout=60)
    return raw, ran


CANVASES = {
    "chain": chain(user.add.s(1, 2), user.mul.s(10), user.add.s(5)),
    "group": group(user.add.s(1, 1), user.mul.s(3, 3), user.add.s(2, 2)),
    "chord": chord([user.add.s(i, i) for i in range(4)], user.tsum.s()),
    "chord-in-chain": chain(
        user.add.s(1, 1), chord([user.add.s(10), user.mul.s(10)], user.tsum.s()), user.mul.s(2)
    ),
    "chain-in-chord-header": chord(
        [chain(user.add.s(1, 2), user.mul.s(3)), user.add.s(10, 10)], user.tsum.s()
    ),
    "immutable": chain(user.add.s(1, 2), user.add.si(10, 20), user.mul.s(2)),
    "partials": chain(user.add.s(1, 2), user.echo.s(4, 5, flag=True)),
    "task-then-group": chain(user.add.s(1, 2), group(user.add.s(10), user.mul.s(10))),
    "group-then-group": chain(
        group(user.add.s(1, 1), user.add.s(2, 2)), group(user.tsum.s(), user.echo.s(7))
    ),
    "group-of-one-in-chain": chain(group(user.add.s(1, 1)), user.mul.s(5)),
    "nested-group": group(user.add.s(1, 1), group(user.add.s(2, 2), user.add.s(3, 3))),
    "bound-task-retrying": chain(user.add.s(1, 2), user.flaky.s(1)),
}


@pytest.mark.parametrize("name", list(CANVASES))
def test_a_canvas_gives_what_raw_celery_gives(
    name: str, raw_celery: Proc, omoi_canvas: tuple[Client, list[str]]
) -> None:
    raw, ran = through_both(CANVASES[name], omoi_canvas)
    assert ran == raw


def test_a_failing_task_ends_the_canvas_naming_it_and_its_dependents_are_cancelled(
    raw_celery: Proc, omoi_canvas: tuple[Client, list[str]]
) -> None:
    canvas = chain(user.add.s(1, 2), user.boom.s(), user.mul.s(2))
    with pytest.raises(RuntimeError, match="boom 3"):
        canvas.clone().apply_async().get(timeout=30)
    client, capabilities = omoi_canvas
    handle = client.submit_canvas(canvas, "fails", capabilities=capabilities)
    with pytest.raises(CanvasFailed) as caught:
        handle.get(timeout=60)
    failed, cancelled = caught.value.failures
    assert (failed["key"], failed["status"]) == ("1.boom", "failed")
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["category"] == "permanent"
    assert (cancelled["key"], cancelled["error"]["category"]) == ("2.mul", "upstream_failed")
    assert handle.ready() and handle.status == "blocked"
    (boom,) = [t for t in client.tasks(ticket_id=handle.ticket_id) if t["key"] == "1.boom"]
    assert client.task(boom["id"])["attempt"] == 1  # final, as in Celery: not retried


def test_arguments_that_are_not_json_are_refused_before_anything_is_submitted(
    omoi_canvas: tuple[Client, list[str]],
) -> None:
    client = omoi_canvas[0]
    before = len(client.tickets(limit=None))
    with pytest.raises(CanvasError, match=r"chain\[1\].args\[0\] is a set"):
        client.submit_canvas(chain(user.add.s(1, 2), user.add.s({3})), "bad")
    assert len(client.tickets(limit=None)) == before
