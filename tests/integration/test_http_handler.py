"""The ``http`` task type end to end: submitted over the API, run by real prefork workers,
against servers on loopback that stand for what only the worker's network reaches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.api import submit, tasks_by_key, wait_finished
from tests.support.httpd import Route, Server, serve
from tests.support.procs import start_worker

SECRET = "the-loopback-secret"


@pytest.fixture(scope="module")
def secret_server() -> Iterator[Server]:
    with serve({"/secret": Route(body=SECRET.encode())}) as server:
        yield server


@pytest.fixture(scope="module")
def allowed_server(secret_server: Server) -> Iterator[Server]:
    """A server the operator opened, which redirects to the secret one."""
    routes = {
        "/page": Route(body=b"hello"),
        "/go": Route(302, headers={"Location": secret_server.url("/secret")}),
    }
    with serve(routes) as server:
        yield server


@pytest.fixture(scope="module")
def http_workers(
    env: dict[str, str], tmp_root: Path, redis_client: redis.Redis, allowed_server: Server
) -> Iterator[None]:
    """A worker on the default rules (capability ``http-default``) and one whose allowlist
    opens the allowed server's port alone (``http-allowing``)."""
    enabled = {**env, "OMOI_ENABLE_TASK_TYPES": "shell,http"}
    default, _ = start_worker(enabled, tmp_root, concurrency=1, capabilities="http-default")
    opened = {**enabled, "OMOI_HTTP_ALLOW": f"127.0.0.1:{allowed_server.port}"}
    allowing, _ = start_worker(opened, tmp_root, concurrency=1, capabilities="http-allowing")
    yield
    default.stop()
    allowing.stop()


def run_http(client: Any, capability: str, **urls: str) -> dict[str, dict[str, Any]]:
    """Run one ``http`` task per ``key=url`` on the worker serving ``capability``; the
    finished tasks, in full (attempts and timeline included), by key."""
    specs = [
        {"key": key, "task_type": "http", "capabilities": [capability], "payload": {"url": url}}
        for key, url in urls.items()
    ]
    ticket = submit(client, specs)
    wait_finished(client, ticket["id"])
    return {
        key: client.get(f"/api/v1/tasks/{task['id']}").get_json()
        for key, task in tasks_by_key(client, ticket["id"]).items()
    }


@pytest.mark.usefixtures("http_workers")
def test_http_task_cannot_read_a_loopback_secret(client: Any, secret_server: Server) -> None:
    task = run_http(client, "http-default", steal=secret_server.url("/secret"))["steal"]
    assert task["status"] == "failed"
    assert task["result"] is None
    assert task["retry_count"] == 0
    assert (task["error"]["category"], task["error"]["type"]) == ("permanent", "RequestRefused")
    assert "127.0.0.1 is a loopback address" in task["error"]["message"]
    assert "OMOI_HTTP_ALLOW" in task["error"]["message"]
    assert SECRET not in json.dumps(task)
    assert secret_server.requests == []


@pytest.mark.usefixtures("http_workers")
def test_http_task_on_an_allowlisted_server_cannot_follow_its_redirect_to_a_secret(
    client: Any, allowed_server: Server, secret_server: Server
) -> None:
    tasks = run_http(
        client, "http-allowing", page=allowed_server.url("/page"), hop=allowed_server.url("/go")
    )
    assert tasks["page"]["status"] == "succeeded"
    assert tasks["page"]["result"] == {"status": 200, "body": "hello"}
    hop = tasks["hop"]
    assert hop["status"] == "failed"
    assert hop["result"] is None
    assert hop["error"]["type"] == "RequestRefused"
    assert f"(redirected from {allowed_server.url('/go')})" in hop["error"]["message"]
    assert "127.0.0.1 is a loopback address" in hop["error"]["message"]
    assert SECRET not in json.dumps(hop)
    assert secret_server.requests == []
