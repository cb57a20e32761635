"""Live task logs: what an attempt writes (a shell command's output as it comes, ``ctx.log``
and ``logging`` lines, an external agent's posted lines) is stored per attempt, bounded, read
by page and followed live; old lines go. Real prefork workers over Redis, PostgreSQL, and an
API under gunicorn for the live streams."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from omoi import beat
from omoi.api import create_app
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.persistence import Database, TaskLog
from omoi.persistence.types import utcnow
from omoi.services import logs, tokens
from omoi.services.dispatcher import NullDispatcher
from omoi.services.read.logs import Batch, LogHub
from omoi.services.signals import NoSignal
from tests.integration.test_agent_boundaries import Agent, agent, held_task, refused
from tests.integration.test_board_sessions import sign_in
from tests.support.api import bearer, make_app, submit, wait_finished
from tests.support.procs import Proc, start_api, wait_for


def log_of(client: Any, task_id: str, **query: Any) -> dict[str, Any]:
    resp = client.get(f"/api/v1/tasks/{task_id}/logs", query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def texts(page: dict[str, Any]) -> list[str]:
    return [line["line"] for line in page["lines"]]


def test_ctx_log_and_logging_lines_are_stored_in_order_per_attempt(
    client: Any, worker: Proc
) -> None:
    """Each attempt's lines, ``ctx.log`` and ``logging`` interleaved as written, numbered from
    1 in their own attempt; the retry's are apart from the first attempt's; the worker's own
    lines (Celery's, omoi's structlog) are in neither."""
    ticket = submit(
        client,
        [
            {
                "key": "talk",
                "task_type": "chatty",
                "payload": {"lines": ["alpha", "beta"], "fail_first": True},
                "retry_backoff": 0.1,
            }
        ],
    )
    assert wait_finished(client, ticket["id"])["status"] == "done"
    task_id = ticket["tasks"][0]["id"]
    for attempt in (1, 2):
        page = log_of(client, task_id, attempt=attempt)
        assert texts(page) == [
            f"alpha on attempt {attempt}",
            f"INFO tests.support.handlers: record 0 on attempt {attempt}",
            f"beta on attempt {attempt}",
            f"INFO tests.support.handlers: record 1 on attempt {attempt}",
        ]
        assert [line["seq"] for line in page["lines"]] == [1, 2, 3, 4]
        assert {line["attempt"] for line in page["lines"]} == {attempt}
        assert [line["stream"] for line in page["lines"]] == ["log"] * 4
        assert page["truncated"] is False
    latest = log_of(client, task_id)
    assert latest["attempt"] == 2 and latest["next_after"] == 4
    assert log_of(client, task_id, after=2, limit=1)["lines"][0]["seq"] == 3


@pytest.fixture(scope="module")
def api_server(env: dict[str, str], tmp_root: Path) -> Iterator[str]:
    """A real API process (gunicorn's gevent workers): the live streams' home."""
    proc, server_env = start_api(env, tmp_root)
    yield f"http://127.0.0.1:{server_env['OMOI_API_PORT']}"
    proc.stop()


class Follower:
    """An SSE client in a thread of its own: each event as ``(wall clock at arrival, event
    name, data)``, until the server ends the stream."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[float, str, Any]] = []
        self.connected = threading.Event()
        self.done = threading.Event()
        self.status: int | None = None
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=60) as r:
                self.status = r.status
                name = "message"
                for raw in r:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("retry:"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        name = line[len("event: ") :]
                    elif line.startswith("data: "):
                        self.events.append((time.time(), name, json.loads(line[len("data: ") :])))
                        name = "message"
        finally:
            self.connected.set()
            self.done.set()

    def named(self, name: str) -> list[Any]:
        return [data for _, event, data in self.events if event == name]

    def arrival(self, line: str) -> float | None:
        return next((t for t, e, d in self.events if e == "line" and d["line"] == line), None)


def test_shell_output_reaches_a_follower_while_the_command_still_runs(
    client: Any, worker: Proc, api_server: str, tmp_path: Path
) -> None:
    """The command prints a line, notes the time, then waits for a file before printing the
    next: the first line reaches a follower of the live stream (gunicorn) within a second of
    being written while the command is still running; the second follows once the file is
    there (on stderr), then the end of the attempt, and the stream closes."""
    start, wrote, go = (tmp_path / name for name in ("start", "wrote", "go"))
    command = (
        f"while [ ! -e {start} ]; do sleep 0.02; done; echo first; date +%s.%N > {wrote}; "
        f"while [ ! -e {go} ]; do sleep 0.02; done; echo second >&2"
    )
    task = {"key": "sh", "task_type": "shell", "payload": {"command": command}}
    ticket = submit(client, [{**task, "timeout_seconds": 60}])
    task_id = ticket["tasks"][0]["id"]
    follower = Follower(f"{api_server}/api/v1/tasks/{task_id}/logs/stream", bearer())
    assert follower.connected.wait(10) and follower.status == 200
    start.touch()
    arrived = wait_for(lambda: follower.arrival("first"), timeout=10, what="the first line")
    assert client.get(f"/api/v1/tasks/{task_id}").get_json()["status"] == "running"
    assert not go.exists()  # the command is still waiting for it: still running
    written = float(wait_for(lambda: wrote.exists() and wrote.read_text().strip(), timeout=5))
    assert arrived - written < 1.0, f"the first line took {arrived - written:.3f} s"
    go.touch()
    assert follower.done.wait(30), "the stream ends with the attempt"
    lines = [(d["line"], d["stream"], d["seq"]) for d in follower.named("line")]
    assert lines == [("first", "stdout", 1), ("second", "stderr", 2)]
    assert follower.named("end") == [
        {"task_id": task_id, "attempt": 1, "status": "succeeded", "truncated": False}
    ]
    assert texts(log_of(client, task_id)) == ["first", "second"]


# -- external agents: only the lease holder writes --------------------------------------------


def lines_stored(db: Database, task_id: str) -> int:
    with db.connect() as conn:
        query = select(func.count()).where(TaskLog.task_id == uuid.UUID(task_id))
        return int(conn.execute(query).scalar_one())


def post_lines(client: Any, holder: Agent, task_id: str, body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/tasks/{task_id}/logs", json=body, headers=holder.headers)


def test_an_external_agent_posts_lines_to_the_attempt_its_lease_holds(
    store: tuple[Database, Any],
) -> None:
    """Posted lines join the attempt's log in order (stream ``agent`` unless it says
    ``stdout`` or ``stderr``); once the agent reported, its lease no longer writes (409)."""
    db, client = store
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(client, db, [skill])
    claimed = held_task(client, holder, skill)
    task_id, lease = claimed["task_id"], claimed["lease_token"]
    first = post_lines(client, holder, task_id, {"lease_token": lease, "lines": ["one", "two"]})
    assert first.status_code == 200, first.get_json()
    assert first.get_json() == {"task_id": task_id, "attempt": 1, "stored": 2, "truncated": False}
    more = {"lease_token": lease, "lines": ["oops"], "stream": "stderr"}
    assert post_lines(client, holder, task_id, more).status_code == 200
    page = log_of(client, task_id)
    assert [(x["seq"], x["stream"], x["line"]) for x in page["lines"]] == [
        (1, "agent", "one"),
        (2, "agent", "two"),
        (3, "stderr", "oops"),
    ]
    done = client.post(
        f"/api/v1/tasks/{task_id}/complete",
        json={"lease_token": lease, "result": None},
        headers=holder.headers,
    )
    assert done.status_code == 200
    late = post_lines(client, holder, task_id, {"lease_token": lease, "lines": ["late"]})
    refused(late, 409, "lease_not_held")
    assert lines_stored(db, task_id) == 3


def test_log_lines_under_a_wrong_lease_or_from_another_agent_are_refused(
    api_client: Any, db: Database
) -> None:
    """A lease that is not the task's (409), another agent's token with the right lease
    (403), a token without the agent scope (403), a task that does not exist (404): each a
    JSON error, and not one line written."""
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder, other = agent(api_client, db, [skill]), agent(api_client, db, [skill], "other")
    claimed = held_task(api_client, holder, skill)
    task_id, lease = claimed["task_id"], claimed["lease_token"]
    body = {"lease_token": lease, "lines": ["sneaky"]}
    wrong = post_lines(api_client, holder, task_id, {**body, "lease_token": str(uuid.uuid4())})
    refused(wrong, 409, "lease_not_held")
    refused(post_lines(api_client, other, task_id, body), 403, "forbidden")
    _, reader = tokens.create(db, f"reader-{uuid.uuid4().hex[:6]}", ["read"])
    as_reader = api_client.post(f"/api/v1/tasks/{task_id}/logs", json=body, headers=bearer(reader))
    refused(as_reader, 403, "forbidden")
    assert lines_stored(db, task_id) == 0
    missing = api_client.post(f"/api/v1/tasks/{uuid.uuid4()}/logs", json=body)  # as admin
    refused(missing, 404, "not_found")
    assert log_of(api_client, task_id)["lines"] == []  # a reader may read the log


@pytest.fixture(scope="module")
def held(api_client: Any, db: Database) -> tuple[Agent, dict[str, Any]]:
    """An external agent and the task it holds, for the hostile bodies."""
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(api_client, db, [skill])
    return holder, held_task(api_client, holder, skill)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"lines": ["a\x00b"]}, 422, "invalid_value"),
        ({"lines": ["\ud800"]}, 422, "invalid_value"),
        ({"lines": ["one\ntwo"]}, 422, "unprocessable_entity"),
        ({"lines": ["carriage\r"]}, 422, "unprocessable_entity"),
        ({"lines": []}, 422, "unprocessable_entity"),
        ({"lines": ["x"] * 1001}, 422, "unprocessable_entity"),
        ({"lines": [1, 2]}, 422, "unprocessable_entity"),
        ({"lines": "a string"}, 422, "unprocessable_entity"),
        ({"lines": ["x"], "stream": "omoi"}, 422, "unprocessable_entity"),
        ({"lines": ["x"], "level": "high"}, 422, "unprocessable_entity"),
        ({"lines": ["x" * 1024 * 1024]}, 413, "request_entity_too_large"),
    ],
)
def test_a_hostile_log_body_is_refused_and_writes_nothing(
    api_client: Any,
    db: Database,
    held: tuple[Agent, dict[str, Any]],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    holder, claimed = held
    task_id = claimed["task_id"]
    resp = post_lines(api_client, holder, task_id, {"lease_token": claimed["lease_token"], **body})
    refused(resp, status, code)
    assert lines_stored(db, task_id) == 0


def test_a_log_body_that_is_not_json_is_refused(
    api_client: Any, db: Database, held: tuple[Agent, dict[str, Any]]
) -> None:
    holder, claimed = held
    url = f"/api/v1/tasks/{claimed['task_id']}/logs"
    form = api_client.post(url, data="lines=x", headers=holder.headers)
    refused(form, 415, "unsupported_media_type")
    broken = api_client.post(
        url, data='{"lines": [', headers={**holder.headers, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "error" in broken.get_json()
    assert lines_stored(db, claimed["task_id"]) == 0


# -- bounded: the cap and its one marker -------------------------------------------------------


def capped_client(settings: Settings, db: Database, cap: int) -> Any:
    """An API on ``db`` whose attempts keep ``cap`` lines."""
    local = dataclasses.replace(settings, database_url=db.url, log_max_lines=cap)
    return make_app(local, db=db, dispatcher=NullDispatcher()).test_client()


def test_a_workers_log_keeps_its_cap_then_one_truncation_marker(
    store: tuple[Database, Any],
) -> None:
    """The worker's buffered log of a 5-line cap: four lines and a long one that is cut reach
    the cap without a marker; the next batch crossing it stores the marker alone, once; later
    writes store nothing. Every line of a batch is one INSERT, flushed on close."""
    db, client = store
    task_id = submit(client, [{"key": "t", "task_type": "noop"}])["tasks"][0]["id"]
    limits = logs.LogLimits(max_lines=5, max_line_chars=10)
    attempt_log = logs.AttemptLog(db, NoSignal(), uuid.UUID(task_id), 1, limits)
    for n in range(4):
        attempt_log.write(f"line {n}")
    attempt_log.write("a line longer than ten")
    attempt_log.flush()
    page = log_of(client, task_id)
    assert texts(page)[-1] == "a line lo…" and not page["truncated"]
    attempt_log.write("x\ny", "stderr")
    attempt_log.write("dropped")
    attempt_log.close()
    attempt_log.write("after the end")
    attempt_log.flush()
    page = log_of(client, task_id)
    assert [x["seq"] for x in page["lines"]] == [1, 2, 3, 4, 5, 6]
    assert page["lines"][-1]["stream"] == "omoi" and "reached 5 lines" in page["lines"][-1]["line"]
    assert page["truncated"] is True
    with pytest.raises(ValueError, match="log stream"):
        attempt_log.write("x", "omoi")  # only omoi writes the marker


def test_an_agents_posts_past_the_cap_store_the_marker_once(
    store: tuple[Database, Any], settings: Settings
) -> None:
    db, _ = store
    client = capped_client(settings, db, cap=5)
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(client, db, [skill])
    claimed = held_task(client, holder, skill)
    task_id, lease = claimed["task_id"], claimed["lease_token"]
    stored = [
        post_lines(client, holder, task_id, {"lease_token": lease, "lines": lines}).get_json()
        for lines in (["a", "b", "c"], ["d", "e", "f", "g"], ["h"])
    ]
    assert [(s["stored"], s["truncated"]) for s in stored] == [(3, False), (3, True), (0, True)]
    page = log_of(client, task_id)
    assert texts(page)[:5] == ["a", "b", "c", "d", "e"]
    assert [x["stream"] for x in page["lines"]].count("omoi") == 1 and page["truncated"]


# -- following without notifications, the board's stream, retention ---------------------------


def test_a_follower_without_notifications_gets_each_line_once_and_the_end_by_polling(
    api_client: Any, db: Database
) -> None:
    """The embedded default has no bus: a hub that hears nothing still hands a follower
    every line within a second of its commit, once each and in order, and ends the feed
    when the attempt ends (its one poll of the followed tasks sees both)."""
    hub = LogHub(db, poll=0.2)
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(api_client, db, [skill])
    claimed = held_task(api_client, holder, skill)
    task_id, lease = uuid.UUID(claimed["task_id"]), uuid.UUID(claimed["lease_token"])
    got: list[Any] = []
    ends: list[Batch] = []
    deadline = time.monotonic() + 30

    def follow() -> None:
        for batch in hub.follow(task_id, 1, keep_going=lambda: time.monotonic() < deadline):
            got.extend(batch.lines)
            if batch.ended:
                ends.append(batch)

    reader = threading.Thread(target=follow)
    reader.start()

    def post_and_wait(text: str) -> float:
        """Seconds from the post's commit until the follower has the line."""
        logs.post(db, NoSignal(), task_id, lease, [text], "agent", logs.LogLimits())
        posted = time.monotonic()
        wait_for(lambda: got and got[-1].line == text, timeout=5, what=text)
        return time.monotonic() - posted

    assert post_and_wait("first") < 1.0
    assert post_and_wait("second") < 1.0
    done = api_client.post(
        f"/api/v1/tasks/{task_id}/complete",
        json={"lease_token": str(lease), "result": None},
        headers=holder.headers,
    )
    assert done.status_code == 200
    reader.join(10)
    assert not reader.is_alive(), "the feed ends with the attempt"
    assert [(x.seq, x.line) for x in got] == [(1, "first"), (2, "second")]
    assert [(b.status, b.truncated) for b in ends] == [("succeeded", False)]


def test_the_board_streams_a_tasks_log_to_a_signed_in_session(
    settings: Settings, db: Database, api_client: Any
) -> None:
    """``/board/tasks/<id>/logs/stream`` sends a signed-in browser the lines and the end, as
    the API's stream does; without a session it is the sign-in page's, and the session
    reaches no API route."""
    bare = create_app(settings, db=db, dispatcher=NullDispatcher())
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(api_client, db, [skill])
    claimed = held_task(api_client, holder, skill)
    task_id, lease = claimed["task_id"], claimed["lease_token"]
    post_lines(api_client, holder, task_id, {"lease_token": lease, "lines": ["for the board"]})
    api_client.post(
        f"/api/v1/tasks/{task_id}/complete",
        json={"lease_token": lease, "result": None},
        headers=holder.headers,
    )
    browser = bare.test_client()
    sign_in(browser)
    resp = browser.get(f"/board/tasks/{task_id}/logs/stream?timeout=10")
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    body = resp.get_data(as_text=True)
    assert "id: 1\nevent: line\n" in body and "for the board" in body
    assert '"status": "succeeded"' in body.split("event: end\n", 1)[1]
    assert browser.get(f"/board/tasks/{task_id}/logs/stream?attempt=0").status_code == 422
    assert browser.get(f"/board/tasks/{uuid.uuid4()}/logs/stream").status_code == 404
    stranger = bare.test_client().get(f"/board/tasks/{task_id}/logs/stream")
    assert stranger.status_code == 302 and stranger.headers["Location"].startswith("/board/login")
    assert browser.get(f"/api/v1/tasks/{task_id}/logs/stream").status_code == 401


def test_the_retention_sweep_deletes_only_lines_older_than_the_retention(
    store: tuple[Database, Any], settings: Settings
) -> None:
    """Lines older than the retention go, a batch at a time; younger ones, of the same task
    too, stay. Beat runs the sweep every round."""
    db, client = store
    ticket = submit(client, [{"key": "a", "task_type": "noop"}, {"key": "b", "task_type": "noop"}])
    a, b = (uuid.UUID(t["id"]) for t in ticket["tasks"])
    now = utcnow()
    rows = [
        *((a, 1, seq, now - timedelta(days=8)) for seq in (1, 2, 3)),
        (a, 2, 1, now - timedelta(days=6)),
        (b, 1, 1, now),
    ]
    with db.connect() as conn:
        conn.execute(
            insert(TaskLog.__table__),
            [
                {"task_id": t, "attempt": n, "seq": s, "at": at, "stream": "log", "line": "x"}
                for t, n, s, at in rows
            ],
        )
    assert logs.sweep(db, retention=7 * 24 * 3600, batch=2) == 3
    with db.connect() as conn:
        kept = set(conn.execute(select(TaskLog.task_id, TaskLog.attempt, TaskLog.seq)))
    assert kept == {(a, 2, 1), (b, 1, 1)}
    local = dataclasses.replace(settings, database_url=db.url)
    assert "logs" in beat.sweeps(Root(local, Role.BEAT, db=db))


def test_a_log_stream_holds_one_of_its_tokens_stream_slots(
    settings: Settings, db: Database, api_client: Any
) -> None:
    """Log streams and event streams share ``OMOI_MAX_STREAMS_PER_TOKEN``: with a cap of
    one, an open log stream makes the next stream of its token a 429 until it closes."""
    local = dataclasses.replace(settings, max_streams_per_token=1)
    client = make_app(local, db=db, dispatcher=NullDispatcher()).test_client()
    skill = f"logs-{uuid.uuid4().hex[:6]}"
    holder = agent(api_client, db, [skill])
    task_id = held_task(api_client, holder, skill)["task_id"]
    held_open = client.get(f"/api/v1/tasks/{task_id}/logs/stream", buffered=False)
    assert held_open.status_code == 200
    refused(client.get("/api/v1/events/stream?timeout=1"), 429, "too_many_streams")
    refused(client.get(f"/api/v1/tasks/{task_id}/logs/stream"), 429, "too_many_streams")
    held_open.close()
    assert client.get("/api/v1/events/stream?timeout=0.1").status_code == 200
