"""The raw-Celery baseline: the same broker and the same crash-safety settings as omoi
(acks late, prefetch 1, prefork), with jobs that only touch Redis."""

from __future__ import annotations

import os
import time

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
_pg: psycopg.Connection | None = None
RECORD_DDL = "CREATE TABLE raw_bench_done (id bigserial PRIMARY KEY, counter text)"


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
    global _pg
    if _pg is None:
        _pg = psycopg.connect(os.environ["OMOI_DATABASE_URL"], autocommit=True)
    _pg.execute("INSERT INTO raw_bench_done (counter) VALUES (%s)", (counter,))
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
