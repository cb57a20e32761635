"""Redis and PostgreSQL going away mid-run, on private servers (the shared ones are never
touched): every acknowledged ticket finishes, no task is left open, no effect runs twice.

Each test returns its recovery time; ``python -m tests.faults.chaos`` repeats them."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from omoi.broker.app import make_celery
from omoi.broker.dispatcher import CeleryDispatcher
from omoi.config import Settings
from omoi.persistence import Database
from omoi.persistence.migrate import upgrade
from omoi.services import attempts, outbox
from tests.support.api import cut_off_client, make_app, submit, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, report_recovery, start_beat, start_worker, wait_for
from tests.support.services import PostgresServer, RedisServer
from tests.support.units import Recorded, unit_of_work

TERMINAL = {"succeeded", "failed", "cancelled"}


def layered(count: int, seconds: float) -> list[dict[str, Any]]:
    """``count`` roots and as many children, one per root: work queued at every moment."""
    roots = [
        {"key": f"r{i}", "task_type": "effect", "payload": {"seconds": seconds}}
        for i in range(count)
    ]
    children = [
        {"key": f"c{i}", "task_type": "effect", "depends_on": [f"r{i}"]} for i in range(count)
    ]
    return roots + children


def succeeded(client: Any, ticket_id: str) -> int:
    resp = client.get(f"/api/v1/tickets/{ticket_id}")
    return int(resp.get_json()["task_counts"].get("succeeded", 0)) if resp.status_code == 200 else 0


def wait_done(client: Any, ticket_id: str) -> None:
    """Wait for the ticket to be done; on a timeout, say which tasks are not finished."""
    try:
        assert wait_finished(client, ticket_id, timeout=90)["status"] == "done"
    except AssertionError as exc:
        items = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
        open_ = [
            (t["key"], t["status"], t["attempt"], t["agent_id"], t.get("published_at"))
            for t in items
            if t["status"] not in TERMINAL
        ]
        raise AssertionError(f"{exc}; unfinished: {open_}") from exc


def assert_clean(client: Any, redis_client: redis.Redis, ticket_ids: list[str]) -> None:
    """Every ticket done, every task terminal, every effect applied exactly once."""
    for ticket_id in ticket_ids:
        items = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
        assert {t["status"] for t in items} <= TERMINAL
        assert [t["status"] for t in items] == ["succeeded"] * len(items)
        runs = [int(redis_client.get(EFFECT_KEY.format(t["id"])) or 0) for t in items]
        assert runs == [1] * len(items)


@dataclasses.dataclass
class Stack:
    client: Any
    procs: list[Proc]


def start_stack(env: dict[str, str], tmp: Path, beats: int = 1) -> Stack:
    """An API client, a two-process worker and ``beats`` beats, all on ``env``'s servers."""
    client = make_app(Settings.from_env(env)).test_client()
    worker, _ = start_worker(env, tmp, concurrency=2)
    procs = [worker]
    for n in range(beats):
        (tmp / f"b{n}").mkdir()
        procs.append(start_beat(env, tmp / f"b{n}"))
    return Stack(client, procs)


def redis_restart(
    env: dict[str, str],
    broker: RedisServer,
    tmp: Path,
    redis_client: redis.Redis,
    *,
    lose_data: bool,
) -> float:
    """Kill Redis mid-run (keeping or losing its data), submit while it is down, restart it;
    two beats run throughout. Returns seconds from the restart until everything finished."""
    env = {**env, "OMOI_OUTBOX_LOST_AGE": "10"}  # bounds the wait for prefetched messages
    stack = start_stack(env, tmp, beats=2)
    try:
        first = submit(stack.client, layered(8, 0.3))["id"]
        wait_for(lambda: succeeded(stack.client, first) >= 3, timeout=60, what="work under way")
        broker.kill()
        if lose_data:
            broker.wipe()
        second = submit(stack.client, layered(4, 0.1))["id"]  # committed; published later
        broker.start()
        restarted = time.monotonic()
        for ticket_id in (first, second):
            wait_done(stack.client, ticket_id)
        recovery = time.monotonic() - restarted
        assert_clean(stack.client, redis_client, [first, second])
        return recovery
    finally:
        for proc in stack.procs:
            proc.stop()


@pytest.mark.parametrize("lose_data", [False, True], ids=["keeping-data", "losing-all-data"])
def test_redis_restart_mid_run_loses_nothing(
    stack_env: tuple[dict[str, str], RedisServer],
    tmp_path: Path,
    redis_client: redis.Redis,
    lose_data: bool,
) -> None:
    env, broker = stack_env
    recovery = redis_restart(env, broker, tmp_path, redis_client, lose_data=lose_data)
    report_recovery(recovery)


def postgres_restart(env: dict[str, str], tmp: Path, redis_client: redis.Redis) -> float:
    """Stop PostgreSQL mid-run for a few seconds: the API answers 503 meanwhile, the worker
    waits to store its results, nothing is retried. Returns seconds from the restart until
    the API answers and the ticket is done."""
    server = PostgresServer()
    broker = RedisServer(tmp / "redis", persist=False)
    try:
        server.start()
        broker.start()
        url = server.create_database("omoi")
        upgrade(url)
        env = {**env, "OMOI_DATABASE_URL": url, "OMOI_BROKER_URL": broker.url()}
        stack = start_stack(env, tmp)
        try:
            ticket = submit(stack.client, layered(6, 0.5))["id"]
            wait_for(lambda: succeeded(stack.client, ticket) >= 2, timeout=60, what="work")
            server.stop()
            during = stack.client.get(f"/api/v1/tickets/{ticket}")
            assert during.status_code == 503, during.get_json()
            assert int(during.headers["Retry-After"]) > 0
            assert during.get_json()["error"]["code"] == "unavailable"
            refused = stack.client.post("/api/v1/tickets", json={"title": "t", "tasks": []})
            assert refused.status_code == 503
            time.sleep(3)  # the outage itself: what is measured is the time after it
            server.start()
            restarted = time.monotonic()
            wait_done(stack.client, ticket)
            recovery = time.monotonic() - restarted
            assert_clean(stack.client, redis_client, [ticket])
            items = stack.client.get(f"/api/v1/tasks?ticket_id={ticket}").get_json()["items"]
            assert {t["attempt"] for t in items} == {1}  # waited out, not retried or lost
            # beat's sweeps failed during the outage and its rounds went on: the outbox sweep
            # still publishes a task nobody published
            assert "sweep_failed" in stack.procs[1].output()
            quiet = cut_off_client(Settings.from_env(env))
            wait_done(stack.client, submit(quiet, [{"key": "late", "task_type": "effect"}])["id"])
            return recovery
        finally:
            for proc in stack.procs:
                proc.stop()
    finally:
        broker.kill()
        server.remove()


def test_postgres_restart_mid_run_answers_503_and_recovers(
    env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    recovery = postgres_restart(env, tmp_path, redis_client)
    report_recovery(recovery)


def take_messages(broker: redis.Redis, queue: str = "cap.default") -> list[str]:
    """Consume every message waiting on ``queue``, as a worker that ran them would: their ids."""
    raw = broker.lrange(queue, 0, -1)
    broker.delete(queue)
    return [json.loads(m)["headers"]["id"] for m in raw]


def test_a_claim_lost_in_a_postgres_crash_is_republished_and_its_result_refused(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A claim commits without waiting for the WAL flush (one fsync less per task). Crash
    PostgreSQL right after one, before the WAL writer ran: the claim is gone, the attempt's
    late result is refused, the outbox sweep re-publishes the task once, and it runs once."""
    server = PostgresServer()
    broker_server = RedisServer(tmp_path / "redis", persist=False)
    # no autovacuum worker commits (its commit would write the claim's WAL out with its own)
    quiet = ("autovacuum=off",)
    try:
        server.start(*quiet)
        broker_server.start()
        url = server.create_database("omoi")
        upgrade(url)
        settings = Settings.from_env({**env, "OMOI_DATABASE_URL": url})
        settings = dataclasses.replace(settings, broker_url=broker_server.url())
        broker = redis.Redis.from_url(broker_server.url())
        client = make_app(settings).test_client()
        ticket = submit(client, [{"key": "a", "task_type": "effect"}])["id"]
        (task,) = client.get(f"/api/v1/tasks?ticket_id={ticket}").get_json()["items"]
        task_id = uuid.UUID(task["id"])
        assert take_messages(broker) == [f"{task_id}:1"]  # published, then taken by a worker
        # The publish stamp is on disk, as the next durable commit of anyone puts it there
        # (without one, whether it survives depends on where the WAL pages happen to end).
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("UPDATE tickets SET updated_at = updated_at")
            writer = pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"
            ).fetchone()
        assert writer is not None
        # The WAL writer alone writes an asynchronous commit out (a woken, hibernating one at
        # once): stopped, it cannot, and the crash loses the claim by construction. The
        # postmaster's immediate shutdown then kills it (SIGKILL reaches a stopped process).
        os.kill(writer[0], signal.SIGSTOP)

        db = Database(url, pre_ping=False)
        uow = unit_of_work(db, published := Recorded())
        claimed = attempts.claim(uow, task_id, 1)
        assert claimed is not None
        server.crash()
        db.dispose()
        server.start(*quiet)

        assert client.get(f"/api/v1/tasks/{task_id}").get_json()["status"] == "queued"
        assert attempts.succeed(uow, claimed[0], "late") is False
        dispatcher = CeleryDispatcher(make_celery(settings), settings.time_limit_grace)
        assert outbox.sweep(db, dispatcher, unpublished_age=10, lost_age=600) == 1
        assert take_messages(broker) == [f"{task_id}:1"]
        assert outbox.sweep(db, dispatcher, unpublished_age=10, lost_age=600) == 0

        again = attempts.claim(uow, task_id, 1)
        assert again is not None
        assert attempts.succeed(uow, again[0], "done") is True
        assert published.published == []  # it had no dependents to release
        final = client.get(f"/api/v1/tasks/{task_id}").get_json()
        assert (final["status"], final["result"]) == ("succeeded", "done")
        db.dispose()
    finally:
        broker_server.kill()
        server.remove()
