"""The CLI against a real API server (gunicorn) and prefork worker on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from omoi.persistence import Agent, Database, Task
from omoi.services import tokens
from tests.support.api import bearer
from tests.support.procs import ROOT, Proc, free_port, start_api, wait_for
from tests.support.procs import run_omoi as omoi


@pytest.fixture(scope="module")
def api_server(env: dict[str, str], tmp_root: Path) -> Iterator[dict[str, str]]:
    proc, server_env = start_api(env, tmp_root)
    yield server_env
    proc.stop()


def get_json(env: dict[str, str], path: str) -> Any:
    url = f"http://127.0.0.1:{env['OMOI_API_PORT']}{path}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=bearer())) as resp:
        return json.loads(resp.read())


def post_json(env: dict[str, str], path: str, body: Any) -> Any:
    url = f"http://127.0.0.1:{env['OMOI_API_PORT']}{path}"
    headers = {"Content-Type": "application/json", **bearer()}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request) as resp:
        return json.loads(resp.read())


def test_logs_follows_a_running_shell_task_until_it_ends(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    """``omoi logs TASK --follow`` prints a shell command's lines while it runs (stdout on
    standard output, stderr on standard error) and exits 0 when the attempt ends; ``omoi logs
    TASK`` then prints the whole log the same way."""
    go = tmp_path / "go"
    command = f"echo one; echo two >&2; while [ ! -e {go} ]; do sleep 0.05; done; echo three"
    task = {"key": "sh", "task_type": "shell", "payload": {"command": command}}
    ticket = post_json(api_server, "/api/v1/tickets", {"title": "logs", "tasks": [task]})
    task_id = ticket["tasks"][0]["id"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "omoi", "logs", task_id, "--follow"],
        cwd=ROOT,
        env=api_server,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "one\n"  # printed while the command waits
        assert get_json(api_server, f"/api/v1/tasks/{task_id}")["status"] == "running"
        go.touch()
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert out == "three\n"
    assert err.splitlines() == ["two", "attempt 1 ended: succeeded"]
    printed = omoi(api_server, "logs", task_id)
    assert printed.returncode == 0, printed.stderr
    assert (printed.stdout, printed.stderr) == ("one\nthree\n", "two\n")
    missing = omoi(api_server, "logs", str(uuid.uuid4()))
    assert missing.returncode != 0 and "404" in missing.stderr


def test_submit_wait_and_status(api_server: dict[str, str], worker: Proc) -> None:
    done = omoi(api_server, "submit", "examples/ticket.yaml", "--wait")
    assert done.returncode == 0, done.stderr
    ticket_id = done.stdout.split()[1]
    assert "accepted with 4 tasks" in done.stdout
    assert "100.0%" in done.stdout and "PHASE_DONE" in done.stdout
    status = omoi(api_server, "status", ticket_id)
    assert status.returncode == 0, status.stderr
    assert f"ticket {ticket_id}: done (PHASE_DONE)" in status.stdout


def test_example_handler_sees_dependency_results(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    ticket = tmp_path / "t.json"
    ticket.write_text(
        json.dumps(
            {
                "title": "words",
                "tasks": [
                    {"key": "a", "task_type": "word-count", "payload": {"text": "one two three"}},
                    {
                        "key": "b",
                        "task_type": "word-count",
                        "depends_on": ["a"],
                        "payload": {"text": "four five"},
                    },
                ],
            }
        )
    )
    done = omoi(api_server, "submit", str(ticket), "--wait")
    assert done.returncode == 0, done.stderr
    ticket_id = done.stdout.split()[1]
    tasks = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"]
    assert {t["key"]: t for t in tasks}["b"]["result"] == {"words": 5}


def test_submit_reports_a_rejected_ticket(api_server: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: loop\ntasks:\n  - {key: a, task_type: noop, depends_on: [a]}\n")
    result = omoi(api_server, "submit", str(bad))
    assert result.returncode != 0
    assert "422" in result.stderr and "themselves: a" in result.stderr


def test_example_external_agent_drains_its_tasks(api_server: dict[str, str], db: Database) -> None:
    url = f"http://127.0.0.1:{api_server['OMOI_API_PORT']}"
    skill = f"translate-{uuid.uuid4().hex[:6]}"
    body = json.dumps(
        {
            "title": "words",
            "tasks": [
                {
                    "key": "hello",
                    "task_type": "upper",
                    "capabilities": [skill],
                    "external": True,
                    "payload": {"text": "hello"},
                },
                {
                    "key": "world",
                    "task_type": "upper",
                    "capabilities": [skill],
                    "external": True,
                    "depends_on": ["hello"],
                    "payload": {"text": "world"},
                },
                {
                    "key": "bad",
                    "task_type": "upper",
                    "capabilities": [skill],
                    "external": True,
                    "payload": {"text": 7},
                },
            ],
        }
    ).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/tickets", data=body, headers={"Content-Type": "application/json", **bearer()}
    )
    with urllib.request.urlopen(request) as resp:
        ticket = json.loads(resp.read())
    _, agent_token = tokens.create(db, f"agent-{skill}", ["agent"])
    agent = subprocess.run(
        [
            sys.executable,
            "examples/external_agent.py",
            "--api",
            url,
            "--capabilities",
            skill,
            "--once",
        ],
        cwd=ROOT,
        env={**api_server, "OMOI_TOKEN": agent_token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == 0, agent.stderr
    assert "completed hello" in agent.stdout and "completed world" in agent.stdout
    items = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket['id']}")["items"]
    tasks = {t["key"]: t for t in items}
    assert tasks["world"]["result"] == {"text": "WORLD", "inputs": ["hello"]}
    assert (tasks["bad"]["status"], tasks["bad"]["error"]["category"]) == ("failed", "permanent")
    logged = get_json(api_server, f"/api/v1/tasks/{tasks['hello']['id']}/logs")["lines"]
    assert [(x["stream"], x["line"]) for x in logged] == [
        ("agent", "example-agent took hello (attempt 1)")
    ]


def test_tasks_agents_and_events_tables(api_server: dict[str, str], worker: Proc) -> None:
    done = omoi(api_server, "submit", "examples/ticket.yaml", "--wait")
    ticket_id = done.stdout.split()[1]
    tasks = omoi(api_server, "tasks", "--ticket", ticket_id)
    assert tasks.returncode == 0, tasks.stderr
    lines = tasks.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "KEY", "TASK_TYPE", "STATUS"]
    assert len(lines) == 5 and all("succeeded" in line for line in lines[1:])
    agents = omoi(api_server, "agents")
    assert agents.returncode == 0 and "celery" in agents.stdout
    events = omoi(api_server, "events", "--ticket", ticket_id)
    assert "ticket.created" in events.stdout and "ticket.completed" in events.stdout
    follow = omoi(api_server, "events", "--ticket", ticket_id, "--follow", "--timeout", "1")
    assert follow.returncode == 0
    assert follow.stdout.splitlines() == events.stdout.splitlines()
    # each line names the token that made the change; the worker's changes name none
    created = next(line for line in events.stdout.splitlines() if "ticket.created" in line)
    assert "bootstrap" in created.split()
    mine = omoi(api_server, "events", "--ticket", ticket_id, "--actor", "bootstrap")
    assert "ticket.created" in mine.stdout and "task.started" not in mine.stdout


def test_worker_events_flag_turns_on_task_events(env: dict[str, str], tmp_path: Path) -> None:
    proc = Proc(
        [
            sys.executable,
            "-m",
            "omoi",
            "worker",
            "--events",
            "--concurrency",
            "1",
            "--capabilities",
            f"flower{uuid.uuid4().hex[:6]}",
            "--name",
            f"flower-{uuid.uuid4().hex[:6]}@localhost",
        ],
        env,
        tmp_path / "w.log",
    )
    try:
        wait_for(lambda: "ready." in proc.output(), timeout=60, what="the worker")
        assert "task events: ON" in proc.output()
    finally:
        proc.stop()


def test_token_commands_create_list_and_revoke(api_server: dict[str, str]) -> None:
    name = f"viewer-{uuid.uuid4().hex[:6]}"
    created = omoi(api_server, "token", "create", "--scope", "read", name)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("omoi_") and "read" in created.stderr
    reader = {**api_server, "OMOI_TOKEN": secret}
    assert omoi(reader, "tasks").returncode == 0  # reads work with the new token
    listed = omoi(api_server, "token", "list")
    assert name in listed.stdout and secret not in listed.stdout
    assert omoi(api_server, "token", "revoke", name).stdout.strip() == "revoked 1 token(s)"
    wait_for(
        lambda: "401" in omoi(reader, "tasks").stderr, timeout=15, what="the revoked token refused"
    )


def test_ctrl_c_of_up_hands_a_running_task_back_within_the_grace(tmp_path: Path) -> None:
    """The terminal's Ctrl-C reaches ``omoi up`` and its children: the worker waits its
    grace, hands the 120 s task back as interrupted (queued again, no retry spent) and goes
    offline; the stack is down well before the task would have ended, nothing killed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
    env.update(
        OMOI_API_PORT=str(port),
        OMOI_DATA_DIR=str(tmp_path),
        OMOI_SHUTDOWN_GRACE="2",
        PYTHONPATH=str(ROOT),
    )
    proc = Proc([sys.executable, "-m", "omoi", "up"], env, tmp_path / "up.log")
    try:
        wait_for(lambda: "token (admin" in proc.output(), timeout=90, what="omoi up")
        secret = (tmp_path / "token").read_text().strip()
        body = {
            "title": "long",
            "tasks": [{"key": "long", "task_type": "sleep", "payload": {"seconds": 120}}],
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tickets",
            data=json.dumps(body).encode(),
            headers={**bearer(secret), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as resp:
            task_id = json.loads(resp.read())["tasks"][0]["id"]
        url = f"http://127.0.0.1:{port}/api/v1/tasks/{task_id}"

        def running() -> bool:
            with urllib.request.urlopen(urllib.request.Request(url, headers=bearer(secret))) as r:
                return bool(json.loads(r.read())["status"] == "running")

        wait_for(running, timeout=60, what="the task to run")
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends its foreground group
        proc.popen.wait(30)
        took = time.monotonic() - sent
    finally:
        proc.stop()
    assert took < 2 + 8, took  # the grace, then the embedded stack's teardown (some 4 s)
    worker_log = (tmp_path / "logs" / "worker.log").read_text()
    assert "waiting up to 2 s for 1 running task; Ctrl-C again to stop now" in worker_log
    db = Database(f"sqlite:///{tmp_path / 'omoi.sqlite'}")
    try:
        with db.connect() as conn:
            task = conn.execute(select(Task).where(Task.id == uuid.UUID(task_id))).one()
            agent = conn.execute(select(Agent.status)).scalar_one()
    finally:
        db.dispose()
    assert (task.status, task.attempt, task.retry_count) == ("queued", 2, 0)
    assert task.error["category"] == "interrupted"
    assert agent == "offline"
