"""The CLI against a real API server (gunicorn) and prefork worker on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from omoi.persistence import Agent, Database, Task
from omoi.persistence.migrate import upgrade
from omoi.services import tokens
from tests.support.api import bearer
from tests.support.procs import ROOT, Proc, free_port, start_api, wait_for
from tests.support.procs import run_omoi as omoi
from tests.support.services import PostgresServer


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
        assert f"omoi is up; the board is at http://127.0.0.1:{port}/board\n" in proc.output()
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


# -- daily use: every verb, one-line errors, exit codes ---------------------------------------

EXIT_NOT_DONE, EXIT_API, EXIT_USAGE = 3, 4, 2


def ticket_file(tmp_path: Path, tasks: list[dict[str, Any]], **fields: Any) -> str:
    path = tmp_path / f"ticket-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps({"title": "daily", "tasks": tasks, **fields}))
    return str(path)


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The command failed with ``exit_code`` and one ``Error: …`` line, no traceback: the
    line's message."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix("Error: ").rstrip("\n")


def wait_ticket(env: dict[str, str], ticket_id: str, status: str, previous: str) -> Any:
    return wait_for(
        lambda: (
            (t := get_json(env, f"/api/v1/tickets/{ticket_id}"))["status"] == status
            and t["previous_phase"] == previous
            and t
        ),
        timeout=60,
        what=f"ticket {ticket_id} {status} after {previous}",
    )


def event_rows(stdout: str) -> list[list[str]]:
    """Each event line's id, time, type, task key and actor."""
    return [line.split()[:5] for line in stdout.splitlines()]


def test_version_prints_the_installed_version(api_server: dict[str, str]) -> None:
    result = omoi(api_server, "--version")
    assert (result.returncode, result.stdout) == (0, f"omoi {version('omoi')}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "title: broken\ndescription: a: b\n",
            "{path}: line 2, column 15: mapping values are not allowed here",
        ),
        (
            "title: [unclosed\n",
            "{path}: line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        ("\n# nothing here\n", "{path} is empty: a ticket needs at least a title"),
        ("- title: one\n", "{path} holds a list; a ticket is a mapping (title, tasks)"),
        (
            "title: due\ndescription: 2024-01-01\n",
            "{path}: Object of type date is not JSON serializable; quote such values",
        ),
    ],
    ids=["yaml-error", "yaml-unclosed", "empty", "a-list", "a-date"],
)
def test_a_bad_ticket_file_is_one_line(
    api_server: dict[str, str], tmp_path: Path, text: str, expected: str
) -> None:
    """A YAML error with its line and column, an empty file, what JSON cannot carry."""
    path = tmp_path / "ticket.yaml"
    path.write_text(text)
    message = one_line_error(omoi(api_server, "submit", str(path)), 1)
    assert message == expected.format(path=path)


def test_an_unreachable_api_is_named_with_its_url(api_server: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    nowhere = {**api_server, "OMOI_API_URL": url}
    for args in (("tickets",), ("submit", "examples/ticket.yaml"), ("events", "--follow")):
        message = one_line_error(omoi(nowhere, *args), EXIT_API)
        assert message.startswith(f"cannot reach the API at {url} (Connection refused)"), args


def test_a_refusal_shows_the_apis_message(api_server: dict[str, str], tmp_path: Path) -> None:
    missing = uuid.uuid4()
    message = one_line_error(omoi(api_server, "show", str(missing)), EXIT_API)
    assert message == f"404 not_found: task {missing} not found"
    untitled = ticket_file(tmp_path, [], title=None)
    message = one_line_error(omoi(api_server, "submit", untitled), EXIT_API)
    assert message == (
        "422 unprocessable_entity: request validation failed (title: Field may not be null.)"
    )
    refused = omoi({**api_server, "OMOI_TOKEN": "omoi_not-a-token"}, "tickets")
    assert one_line_error(refused, EXIT_API).startswith("401 ")
    # a malformed id is a usage error, before any request
    usage = omoi(api_server, "show", "not-a-uuid")
    assert usage.returncode == EXIT_USAGE and "Traceback" not in usage.stderr
    assert "'not-a-uuid' is not a valid UUID" in usage.stderr


def test_a_server_error_shows_its_message(env: dict[str, str], tmp_path: Path) -> None:
    """A real 5xx: the API's private PostgreSQL stops, and it answers 503."""
    server = PostgresServer()
    try:
        server.start()
        url = server.create_database("omoi")
        upgrade(url)
        proc, server_env = start_api({**env, "OMOI_DATABASE_URL": url}, tmp_path)
        try:
            server.stop()
            message = one_line_error(omoi(server_env, "tickets"), EXIT_API)
            assert message == "503 unavailable: the database is unavailable; retry shortly"
        finally:
            proc.stop()
    finally:
        server.remove()


def test_submit_wait_and_status_exit_3_when_the_ticket_ends_blocked(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    path = ticket_file(
        tmp_path,
        [
            {"key": "fine", "task_type": "vote", "payload": {"value": "yes"}},
            {"key": "boom", "task_type": "explode", "payload": {"message": "no fuel"}},
        ],
    )
    waited = omoi(api_server, "submit", path, "--wait")
    ticket_id = waited.stdout.split()[1]
    message = one_line_error(waited, EXIT_NOT_DONE)
    assert message.startswith(f"ticket {ticket_id} ended blocked after PHASE_RUN: 1 task failed")
    assert waited.stdout.splitlines()[-1] == f"ticket {ticket_id}: blocked (PHASE_BLOCKED)"
    status = omoi(api_server, "status", ticket_id)
    assert one_line_error(status, EXIT_NOT_DONE) == message

    # tasks: newest first, with the error and the result
    listed = omoi(api_server, "tasks", "--ticket", ticket_id)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "KEY",
        "TASK_TYPE",
        "STATUS",
        "ATTEMPT",
        "RETRY_COUNT",
        "ERROR",
        "RESULT",
    ]
    assert [r.split()[1] for r in rows] == ["boom", "fine"]  # created after "fine"
    assert rows[0].split()[3:] == [
        "failed",
        "1",
        "0",
        "permanent",
        "PermanentError:",
        "no",
        "fuel",
        "-",
    ]
    assert rows[1].split()[3:] == ["succeeded", "1", "0", "-", '"yes"']
    everything = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"]
    newest = omoi(api_server, "tasks", "--limit", "1")
    assert newest.stdout.splitlines()[1].split()[0] != everything[0]["id"]


def test_tickets_lists_the_newest_first(api_server: dict[str, str], tmp_path: Path) -> None:
    path = ticket_file(tmp_path, [{"key": "x", "task_type": "vote", "payload": {"value": 1}}])
    first = omoi(api_server, "submit", path).stdout.split()[1]
    second = omoi(api_server, "submit", path).stdout.split()[1]
    listed = omoi(api_server, "tickets", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "TITLE",
        "WORKFLOW",
        "STATUS",
        "PHASE",
        "PROGRESS",
        "CREATED_AT",
    ]
    assert [r.split()[0] for r in rows] == [second, first]
    assert rows[0].split()[1:3] == ["daily", "dag"]


def test_show_gives_each_attempt_with_its_agent(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    path = ticket_file(
        tmp_path,
        [
            {
                "key": "wobbly",
                "task_type": "flaky",
                "payload": {"fail_times": 1},
                "retry_backoff": 0.1,
            }
        ],
    )
    done = omoi(api_server, "submit", path, "--wait")
    assert done.returncode == 0, done.stderr
    ticket_id = done.stdout.split()[1]
    task = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"][0]
    agent = get_json(api_server, f"/api/v1/agents/{task['agent_id']}")["name"]
    shown = omoi(api_server, "show", task["id"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    fields = {line.split()[0]: line.split()[1:] for line in lines[: lines.index("attempts:")]}
    assert fields["task"] == [task["id"], "wobbly", "(flaky)"]
    assert fields["status"] == ["succeeded", "attempt", "2,", "retries", "1", "of", "3"]
    assert fields["agent"] == [agent]
    assert fields["error"] == ["-"] and fields["result"] == ['{"attempt":', "2}"]
    header, first, second = lines[lines.index("attempts:") + 1 :]
    assert header.split() == ["ATTEMPT", "STARTED_AT", "ENDED_AT", "OUTCOME", "AGENT", "ERROR"]
    assert first.split()[0] == "1" and first.split()[3:] == [
        "retry_scheduled",
        agent,
        "transient",
        "TransientError:",
        "flaky",
        "failure",
        "on",
        "attempt",
        "1",
    ]
    assert second.split()[0] == "2" and second.split()[3:] == ["succeeded", agent, "-"]


def test_cancel_a_task_or_a_ticket(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    long = [
        {"key": "long", "task_type": "effect", "payload": {"seconds": 30}},
        {"key": "after", "task_type": "effect", "depends_on": ["long"]},
    ]
    ticket_id = omoi(api_server, "submit", ticket_file(tmp_path, long)).stdout.split()[1]
    items = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"]
    by_key = {t["key"]: t["id"] for t in items}
    cancelled = omoi(api_server, "cancel", by_key["long"], "--reason", "not today")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == (
        f"task {by_key['long']} (long) cancelled, and the tasks that depend on it\n"
    )
    after = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"]
    assert {t["key"]: t["status"] for t in after} == {"long": "cancelled", "after": "cancelled"}
    again = omoi(api_server, "cancel", by_key["long"])
    assert one_line_error(again, EXIT_API).startswith("409 ")

    other = omoi(api_server, "submit", ticket_file(tmp_path, long)).stdout.split()[1]
    whole = omoi(api_server, "cancel", other)
    assert whole.stdout == f"ticket {other} cancelled; 2 of its tasks are cancelled\n"
    assert get_json(api_server, f"/api/v1/tickets/{other}")["status"] == "cancelled"
    ended = omoi(api_server, "status", other)
    assert one_line_error(ended, EXIT_NOT_DONE) == f"ticket {other} ended cancelled in PHASE_RUN"
    nothing = uuid.uuid4()
    assert one_line_error(omoi(api_server, "cancel", str(nothing)), EXIT_API) == (
        f"no ticket or task {nothing}"
    )


def test_retry_reruns_a_failed_task_and_follow_ends_with_the_ticket(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    once = [{"key": "once", "task_type": "flaky", "payload": {"fail_times": 1}, "max_retries": 0}]
    failed = omoi(api_server, "submit", ticket_file(tmp_path, once), "--wait")
    ticket_id = failed.stdout.split()[1]
    one_line_error(failed, EXIT_NOT_DONE)
    task_id = get_json(api_server, f"/api/v1/tasks?ticket_id={ticket_id}")["items"][0]["id"]
    retried = omoi(api_server, "retry", task_id)
    assert retried.returncode == 0, retried.stderr
    assert re.fullmatch(
        rf"task {task_id} \(once\) is (queued|running|succeeded) again, attempt 2\n",
        retried.stdout,
    )
    # blocked, then resumed: following its events ends at its end, not at the first block
    followed = omoi(api_server, "events", "--ticket", ticket_id, "--follow", timeout=60)
    assert followed.returncode == 0, followed.stderr
    rows = event_rows(followed.stdout)
    types = [r[2] for r in rows]
    assert types.index("ticket.phase_changed") < types.index("task.retried")
    assert "ticket.completed" in types
    assert all(r[3] == "once" for r in rows if r[2].startswith("task."))
    assert all(r[3] == "-" for r in rows if r[2].startswith("ticket."))
    assert followed.stdout == omoi(api_server, "events", "--ticket", ticket_id).stdout
    not_failed = omoi(api_server, "retry", task_id)
    assert "only a failed task can be retried" in one_line_error(not_failed, EXIT_API)


def test_events_follow_a_live_ticket_until_it_ends(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    slow = [
        {"key": "first", "task_type": "effect", "payload": {"seconds": 2}},
        {"key": "second", "task_type": "effect", "depends_on": ["first"]},
    ]
    ticket_id = omoi(api_server, "submit", ticket_file(tmp_path, slow)).stdout.split()[1]
    followed = omoi(api_server, "events", "--ticket", ticket_id, "--follow", timeout=60)
    assert followed.returncode == 0, followed.stderr
    rows = event_rows(followed.stdout)
    assert get_json(api_server, f"/api/v1/tickets/{ticket_id}")["status"] == "done"
    assert "ticket.completed" in [r[2] for r in rows]
    started = {r[3] for r in rows if r[2] == "task.started"}
    assert started == {"first", "second"}  # each task event names its task's key


def test_approve_moves_a_ticket_past_its_approval_gate(
    api_server: dict[str, str], worker: Proc, tmp_path: Path
) -> None:
    submitted = omoi(api_server, "submit", ticket_file(tmp_path, [], workflow="gated"))
    assert submitted.returncode == 0, submitted.stderr
    ticket_id = submitted.stdout.split()[1]
    assert submitted.stdout == (
        f"ticket {ticket_id} accepted: workflow gated walks "
        "REQUIREMENTS → DESIGN → IMPLEMENTATION → TESTING → DONE\n"
    )
    blocked = one_line_error(omoi(api_server, "status", ticket_id), EXIT_NOT_DONE)
    assert blocked == (
        f"ticket {ticket_id} ended blocked after PHASE_REQUIREMENTS: "
        "the PHASE_REQUIREMENTS gate: missing artifact: spec"
    )
    early = omoi(api_server, "approve", ticket_id)
    assert one_line_error(early, 1) == (
        f"ticket {ticket_id} waits for no approval in PHASE_REQUIREMENTS"
    )
    spec = {"type": "spec", "content": {"text": "# Spec\n\n## Scope\n\nAll of it, carefully."}}
    post_json(api_server, f"/api/v1/tickets/{ticket_id}/artifacts", spec)
    wait_ticket(api_server, ticket_id, "blocked", "PHASE_DESIGN")
    approved = omoi(api_server, "approve", ticket_id, "--comment", "looks right")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == (
        f"approved PHASE_DESIGN of ticket {ticket_id}; it is active in PHASE_IMPLEMENTATION\n"
    )
    wait_ticket(api_server, ticket_id, "blocked", "PHASE_TESTING")  # its next gate
    log = omoi(api_server, "events", "--ticket", ticket_id).stdout
    assert ["gate.approved", "-", "bootstrap"] in [r[2:5] for r in event_rows(log)]
