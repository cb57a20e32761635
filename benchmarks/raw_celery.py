"""The raw-Celery baselines: the same broker and the same crash-safety settings as omoi
(acks late, prefetch 1, prefork), with jobs that only touch Redis, that commit one row, or
that run the two statements omoi's durability contract needs per attempt (the floor)."""

from __future__ import annotations

import os
import time
import uuid

import psycopg
import redis
from celery import Celery, group

import celeryconfig
from omoi.config import Settings

QUEUE = "raw.bench"

app = Celery("raw-bench", set_as_current=False)
app.conf.update(celeryconfig.config_for(Settings.from_env()))
app.conf.task_default_queue = QUEUE
_redis: redis.Redis | None = None
_pg: dict[bool, psycopg.Connection] = {}
RECORD_DDL = "CREATE TABLE raw_bench_done (id bigserial PRIMARY KEY, counter text)"
# omoi's own tasks table, its columns, defaults, constraints and indexes (not its foreign
# keys): each floor job's updates maintain what omoi's do
FLOOR_DDL = "CREATE TABLE floor_tasks (LIKE tasks INCLUDING ALL)"
FLOOR_CLAIM = (
    "UPDATE floor_tasks SET status = 'running', lease_token = %s, started_at = now()"
    " WHERE id = %s AND status = 'queued'"
)
FLOOR_RESULT = (
    "UPDATE floor_tasks SET status = 'succeeded', result = %s, finished_at = now()"
    " WHERE id = %s AND status = 'running' AND lease_token = %s"
)


def client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["OMOI_BROKER_URL"])
    return _redis


@app.task(name="raw.noop")
def noop(counter: str) -> None:
    client().incr(counter)


@app.task(name="raw.recorded")
def recorded(counter: str) -> None:
    """The least glue that keeps a durable record: one committed insert per job."""
    pg().execute("INSERT INTO raw_bench_done (counter) VALUES (%s)", (counter,))
    client().incr(counter)


def pg(durable: bool = True) -> psycopg.Connection:
    """This child's autocommit connection; ``durable=False`` commits without waiting for the
    WAL flush, as omoi's claim does."""
    if durable not in _pg:
        options = "" if durable else "-c synchronous_commit=off"
        url = os.environ["OMOI_DATABASE_URL"]
        _pg[durable] = psycopg.connect(url, autocommit=True, options=options)
    return _pg[durable]


@app.task(name="raw.floor")
def floor(counter: str, task_id: str) -> None:
    """What omoi's contract costs at least: a claim under a fresh lease committed without
    waiting for the flush, then the result guarded by that lease, committed durably."""
    lease = uuid.uuid4()
    pg(durable=False).execute(FLOOR_CLAIM, (lease, task_id))
    pg().execute(FLOOR_RESULT, ('{"ok": true}', task_id, lease))
    client().incr(counter)


@app.task(name="raw.hop")
def hop(timeline: str) -> None:
    start = time.time()
    client().rpush(timeline, f"{start}:{time.time()}")


@app.task(name="raw.fan_root")
def fan_root(counter: str, done: str, width: int) -> None:
    """The hand-written fan-out/fan-in a Celery user writes without a result backend: a group
    of leaves, each counting itself in Redis; the last one to count fires the join."""
    group(fan_leaf.si(counter, done, width) for _ in range(width)).apply_async()


@app.task(name="raw.fan_leaf")
def fan_leaf(counter: str, done: str, width: int) -> None:
    if client().incr(counter) == width:
        fan_join.delay(done)


@app.task(name="raw.fan_join")
def fan_join(done: str) -> None:
    client().set(done, time.time())
