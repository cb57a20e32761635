"""Code execution is the operator's decision: a task type that runs code (``shell``, ``http``,
those ``OMOI_EXEC_TASK_TYPES`` marks) needs the ``exec`` scope to submit and runs only on a
worker that enabled it; a shell command sees none of the worker's secrets and nothing it
starts outlives its task. Real prefork workers over Redis, recorded in PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from flask import Flask
from sqlalchemy import func, select

from omoi.broker.app import make_celery
from omoi.broker.dispatcher import CeleryDispatcher
from omoi.config import Settings
from omoi.domain.errors import PermanentError
from omoi.persistence import Agent, Database, Ticket
from omoi.services import tokens
from omoi.services.dispatcher import Dispatch, NullDispatcher
from omoi.worker import shell
from tests.support.api import ADMIN_TOKEN, bearer, make_app, submit, tasks_by_key, wait_finished
from tests.support.procs import ROOT, Proc, run_omoi, start_worker, wait_for


def token(db: Database, *scopes: str) -> dict[str, str]:
    _, secret = tokens.create(db, f"exec-{uuid.uuid4().hex[:6]}", list(scopes))
    return bearer(secret)


def tickets_count(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Ticket)).scalar_one())


def alive(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if marker in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            found.append(p)
    return found


def sleeps(seconds: str) -> list[psutil.Process]:
    """The live ``sleep`` processes of that duration."""
    return [p for p in alive(f"sleep {seconds}") if p.name() == "sleep"]


def unique_seconds() -> str:
    """A ``sleep`` duration no other process uses: its command line names this test's."""
    return f"{10**6 + uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 10**6}"


@pytest.fixture(scope="module")
def quiet(settings: Settings, db: Database) -> Flask:
    """An API that publishes nothing, whose clients send no token unless told to."""
    return make_app(settings, db=db, dispatcher=NullDispatcher())


# -- submitting: the exec scope ------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        {"task_type": "shell", "payload": {"command": "id > /tmp/owned"}},
        {"task_type": "http", "payload": {"url": "http://169.254.169.254/"}},
    ],
)
def test_a_submit_token_cannot_submit_a_task_that_runs_code(
    quiet: Flask, db: Database, task: dict[str, Any]
) -> None:
    """A read + submit token ran any command as the worker's user (root) on every worker."""
    before = tickets_count(db)
    resp = quiet.test_client().post(
        "/api/v1/tickets",
        json={"title": "owned", "tasks": [{"key": "a", **task}, {"key": "b", "task_type": "noop"}]},
        headers=token(db, "read", "submit"),
    )
    assert resp.status_code == 403
    error = resp.get_json()["error"]
    assert error["code"] == "forbidden"
    assert "exec" in error["message"] and task["task_type"] in error["message"]
    assert error["details"]["task_types"] == [task["task_type"]]
    assert tickets_count(db) == before  # nothing written


def test_an_exec_token_or_admin_may_submit_shell_tasks(quiet: Flask, db: Database) -> None:
    ticket = {"title": "build", "tasks": [{"key": "a", "task_type": "shell", "payload": {}}]}
    client = quiet.test_client()
    for headers in (token(db, "submit", "exec"), bearer(ADMIN_TOKEN)):
        assert client.post("/api/v1/tickets", json=ticket, headers=headers).status_code == 201
    # exec alone does not submit: it widens what a submit token may submit
    assert client.post("/api/v1/tickets", json=ticket, headers=token(db, "exec")).status_code == 403


def test_a_type_the_operator_marked_as_exec_needs_the_exec_scope(
    settings: Settings, db: Database
) -> None:
    """A handler of the operator's own that runs what its payload says is as dangerous."""
    marked = dataclasses.replace(settings, exec_task_types=("deploy",))
    client = make_app(marked, db=db, dispatcher=NullDispatcher()).test_client()
    ticket = {"title": "deploy", "tasks": [{"key": "a", "task_type": "deploy"}]}
    resp = client.post("/api/v1/tickets", json=ticket, headers=token(db, "submit"))
    assert resp.status_code == 403
    assert resp.get_json()["error"]["details"]["task_types"] == ["deploy"]
    assert (
        client.post("/api/v1/tickets", json=ticket, headers=token(db, "submit", "exec")).status_code
        == 201
    )


def test_omoi_token_create_grants_the_exec_scope(env: dict[str, str], db: Database) -> None:
    name = f"deployer-{uuid.uuid4().hex[:6]}"
    done = run_omoi(env, "token", "create", "--scope", "submit", "--scope", "exec", name)
    assert done.returncode == 0, done.stderr
    assert tokens.Authenticator(db)(done.stdout.strip()).scopes == frozenset({"submit", "exec"})


def test_a_worker_refuses_to_enable_a_type_that_is_not_an_exec_type(env: dict[str, str]) -> None:
    done = run_omoi(env, "worker", "--enable", "shell,noop")
    assert done.returncode != 0
    assert "'noop', which is not an exec task type" in done.stderr


# -- running: only on workers that enabled the type ----------------------------------------


@pytest.fixture(scope="module")
def plain_worker(env: dict[str, str], tmp_root: Path) -> Iterator[tuple[Proc, str, str]]:
    """A worker without OMOI_ENABLE_TASK_TYPES, alone on a capability of its own."""
    capability = f"plain-{uuid.uuid4().hex[:6]}"
    plain = {k: v for k, v in env.items() if k != "OMOI_ENABLE_TASK_TYPES"}
    proc, name = start_worker(plain, tmp_root, capabilities=capability)
    yield proc, capability, name
    proc.stop()


def test_a_worker_that_has_not_enabled_shell_never_receives_it_and_the_task_says_why(
    client: Any,
    env: dict[str, str],
    tmp_root: Path,
    db: Database,
    redis_client: redis.Redis,
    plain_worker: tuple[Proc, str, str],
) -> None:
    """Every worker ran every shell task it was sent."""
    _, capability, plain_name = plain_worker
    marker = tmp_root / f"ran-{uuid.uuid4().hex[:6]}"
    ticket = submit(
        client,
        [
            {
                "key": "cmd",
                "task_type": "shell",
                "capabilities": [capability],
                "payload": {"command": f"touch {marker}"},
            },
            {"key": "after", "task_type": "noop", "capabilities": [capability]},
        ],
    )
    # the worker took the noop task, published after the shell task, from its own queue
    wait_for(lambda: tasks_by_key(client, ticket["id"])["after"]["status"] == "succeeded")
    cmd = tasks_by_key(client, ticket["id"])["cmd"]
    assert cmd["status"] == "queued" and cmd["started_at"] is None
    assert redis_client.llen(f"cap.{capability}/shell") == 1  # its message waits unconsumed
    detail = client.get(f"/api/v1/tasks/{cmd['id']}").get_json()
    assert detail["waiting_for"] == (
        f"no live worker with capability '{capability}' has enabled task type 'shell'"
    )
    assert enabled_types(db, plain_name) == []

    # a worker its operator started with --enable shell takes it
    enabled, name = start_worker(env, tmp_root, capabilities=capability, enable="shell")
    try:
        wait_finished(client, ticket["id"], timeout=90)
        done = client.get(f"/api/v1/tasks/{cmd['id']}").get_json()
        assert done["status"] == "succeeded" and done["waiting_for"] is None
        assert marker.exists()
        assert enabled_types(db, name) == ["shell"]
    finally:
        enabled.stop()


def enabled_types(db: Database, name: str) -> list[str]:
    with db.connect() as conn:
        return list(
            conn.execute(select(Agent.enabled_task_types).where(Agent.name == name)).scalar_one()
        )


def test_a_shell_message_that_reaches_a_worker_without_shell_fails_and_never_runs(
    quiet: Flask,
    settings: Settings,
    tmp_root: Path,
    plain_worker: tuple[Proc, str, str],
) -> None:
    """Published where a worker that has not enabled shell consumes (an API that does not count
    shell as exec, a hand-made message), it still must not run."""
    _, capability, _ = plain_worker
    marker = tmp_root / f"ran-{uuid.uuid4().hex[:6]}"
    client = quiet.test_client()
    ticket = submit(
        client,
        [
            {
                "key": "cmd",
                "task_type": "shell",
                "capabilities": [capability],
                "payload": {"command": f"touch {marker}"},
            }
        ],
    )
    task = ticket["tasks"][0]
    naive = CeleryDispatcher(make_celery(settings, "omoi-test"), 2, exec_types=frozenset())
    naive.publish([Dispatch(uuid.UUID(task["id"]), 1, f"cap.{capability}", task_type="shell")])
    wait_finished(client, ticket["id"])
    failed = tasks_by_key(client, ticket["id"])["cmd"]
    assert failed["status"] == "failed"
    assert failed["error"]["category"] == "permanent"
    assert failed["error"]["message"] == (
        "task type 'shell' runs code and this worker has not enabled it "
        "(omoi worker --enable shell)"
    )
    assert not marker.exists()


# -- the shell command: scrubbed, and nothing it starts outlives it ------------------------


@pytest.mark.usefixtures("worker")
def test_a_shell_command_cannot_read_the_workers_secrets(client: Any, settings: Settings) -> None:
    """``env`` printed OMOI_DATABASE_URL (with its password) and OMOI_BOOTSTRAP_TOKEN."""
    ticket = submit(client, [{"key": "env", "task_type": "shell", "payload": {"command": "env"}}])
    wait_finished(client, ticket["id"])
    result = tasks_by_key(client, ticket["id"])["env"]["result"]
    assert result["exit_code"] == 0
    seen = dict(line.split("=", 1) for line in result["stdout"].splitlines() if "=" in line)
    assert not [name for name in seen if name.startswith("OMOI_")]
    for secret in (ADMIN_TOKEN, settings.database_url, settings.broker_url):
        assert secret not in result["stdout"]
    assert seen["PATH"] == os.environ["PATH"]


@pytest.mark.usefixtures("worker")
def test_a_split_cannot_turn_a_submitted_payload_into_a_shell_command(
    client: Any, tmp_root: Path
) -> None:
    """A handler that splits as its payload says (``fan-out``) made subtasks of any type: a
    submit token's payload became shell commands without the exec scope."""
    marker = tmp_root / f"ran-{uuid.uuid4().hex[:6]}"
    extra = {"task_type": "shell", "payload": {"command": f"touch {marker}"}}
    ticket = submit(
        client,
        [{"key": "fan", "task_type": "fan-out", "payload": {"values": [1, 2], "extra": extra}}],
    )
    wait_finished(client, ticket["id"])
    tasks = tasks_by_key(client, ticket["id"])
    assert list(tasks) == ["fan"]  # no subtask was added
    assert tasks["fan"]["status"] == "failed"
    assert tasks["fan"]["error"]["category"] == "permanent"
    assert "may not split into 'shell' tasks" in tasks["fan"]["error"]["message"]
    assert not marker.exists()


@pytest.mark.usefixtures("worker")
def test_a_timed_out_commands_background_child_is_killed_before_it_acts(
    client: Any, tmp_root: Path
) -> None:
    """``(sleep 5; touch F) & sleep 30`` with ``timeout_seconds: 2`` left F behind."""
    marker = tmp_root / f"late-{uuid.uuid4().hex[:6]}"
    command = f"(sleep 5; touch {marker}) & sleep 30"
    ticket = submit(
        client,
        [
            {
                "key": "slow",
                "task_type": "shell",
                "payload": {"command": command},
                "timeout_seconds": 2,
                "max_retries": 0,
            }
        ],
    )
    wait_finished(client, ticket["id"])
    task = tasks_by_key(client, ticket["id"])["slow"]
    assert task["status"] == "failed" and task["error"]["category"] == "timeout"
    assert alive(str(marker)) == []  # killed before the failure was recorded
    assert not marker.exists()


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    "escape",
    [
        "setsid sleep {m} &",  # a session of its own, the pipe still open
        "setsid sh -c 'sleep {m} & exit' &",  # and a double fork
        "nohup sleep {m} >/dev/null 2>&1 &",  # in the group, its output closed
    ],
)
def test_a_process_the_command_left_behind_does_not_outlive_the_task(
    client: Any, escape: str
) -> None:
    """``setsid sleep 120 &`` outlived its task, which succeeded at once."""
    m = unique_seconds()
    ticket = submit(
        client,
        [{"key": "leak", "task_type": "shell", "payload": {"command": escape.format(m=m)}}],
    )
    wait_finished(client, ticket["id"])
    assert tasks_by_key(client, ticket["id"])["leak"]["status"] == "succeeded"
    assert alive(f"sleep {m}") == []


@pytest.mark.usefixtures("worker")
def test_cancelling_a_running_command_kills_everything_it_started(client: Any) -> None:
    """A cancel stopped the pool's child, or told the handler, and left the command running."""
    m = unique_seconds()
    command = f"setsid sleep {m} & sleep {m} & sleep {m}"
    ticket = submit(
        client, [{"key": "long", "task_type": "shell", "payload": {"command": command}}]
    )
    wait_for(lambda: len(sleeps(m)) == 3, what="the command's three sleeps")
    task = ticket["tasks"][0]
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel", json={}).status_code == 200
    wait_for(lambda: alive(f"sleep {m}") == [], timeout=15, what="the sleeps to be killed")


def test_a_pool_process_stopped_by_sigterm_kills_its_command_first(tmp_root: Path) -> None:
    """A revoke and the hard time limit stop the pool process with SIGTERM, whose default
    action left the command's session running."""
    m = unique_seconds()
    script = f"from omoi.worker import shell\nshell.run('setsid sleep {m} & sleep {m}')\n"
    pool = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        wait_for(lambda: len(sleeps(m)) == 2, what="the command's two sleeps")
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=10) == -signal.SIGTERM  # it still dies of the signal
        assert alive(f"sleep {m}") == []
    finally:
        pool.kill()
        pool.wait()


def test_a_cancel_seen_while_the_command_runs_kills_everything_it_started() -> None:
    m = unique_seconds()
    started = lambda: len(sleeps(m)) == 2  # noqa: E731
    with pytest.raises(PermanentError, match="cancelled"):
        shell.run(f"setsid sleep {m} & sleep {m}", cancelled=started)
    assert alive(f"sleep {m}") == []
