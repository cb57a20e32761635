"""Benchmarks: omoi against raw Celery on the same Redis, measured in the same run.

    python -m benchmarks [--runs 3] [--tasks 2000]

Needs PostgreSQL and Redis (``OMOI_TEST_PG_URL``, ``OMOI_TEST_REDIS_URL`` as for the tests).
Prints each figure's median and spread over the runs, and the ratio against raw Celery.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis
from celery import chain, group
from sqlalchemy import select, text

from omoi.api import create_app
from omoi.config import Settings
from omoi.domain.enums import TicketStatus
from omoi.models import Database, Task, Ticket
from omoi.models.migrate import upgrade
from omoi.services.dispatcher import NullDispatcher

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("OMOI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OMOI_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")


def poll(done: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:10.2f}  (min {min(values):.2f}, max {max(values):.2f})"


class Bench:
    def __init__(self, tasks: int, concurrency: int) -> None:
        self.n = tasks
        self.concurrency = concurrency
        self.tmp = Path(tempfile.mkdtemp(prefix="omoi-bench-"))
        self.dbname = f"omoi_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        url = PG_ADMIN.rpartition("/")[0] + "/" + self.dbname
        upgrade(url)
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
        self.env = {
            **base,
            "OMOI_DATABASE_URL": url,
            "OMOI_BROKER_URL": REDIS_URL,
            "OMOI_DATA_DIR": str(self.tmp),
            "PYTHONPATH": str(ROOT),
        }
        self.settings = Settings.from_env(self.env)
        self.db = Database(url)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.redis.flushdb()
        os.environ.update(self.env)  # the raw app reads the same settings
        from benchmarks import raw_celery

        self.raw = raw_celery
        self.procs: list[subprocess.Popen[bytes]] = []
        self.app = create_app(self.settings, db=self.db).test_client()
        self.quiet_app = create_app(
            self.settings, db=self.db, dispatcher=NullDispatcher()
        ).test_client()

    def start_workers(self) -> None:
        log = (self.tmp / "workers.log").open("wb")
        common = {"cwd": ROOT, "env": self.env, "stdout": log, "stderr": log}
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "omoi",
                    "worker",
                    "--concurrency",
                    str(self.concurrency),
                    "--loglevel",
                    "WARNING",
                    "--name",
                    "omoi-bench@localhost",
                ],
                **common,
            )
        )
        self.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "benchmarks.raw_celery",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    str(self.concurrency),
                    "-Q",
                    self.raw.QUEUE,
                    "--loglevel",
                    "WARNING",
                    "-n",
                    "raw-bench@localhost",
                ],
                **common,
            )
        )
        app = self.raw.app
        poll(lambda: len(app.control.ping(timeout=0.5) or []) >= 2, timeout=60)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)
        self.db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def submit(self, tasks: list[dict[str, object]], quiet: bool = False) -> str:
        client = self.quiet_app if quiet else self.app
        resp = client.post("/api/v1/tickets", json={"title": "bench", "tasks": tasks})
        assert resp.status_code == 201, resp.get_json()
        return str(resp.get_json()["id"])

    def finished(self, ticket_id: str) -> bool:
        """One-row check (the ticket settles when its last task ends), so polling costs the
        database as little as the raw side's Redis GET costs Redis."""
        with self.db.connect() as conn:
            status = conn.execute(
                select(Ticket.status).where(Ticket.id == uuid.UUID(ticket_id))
            ).scalar_one()
        return status != TicketStatus.ACTIVE

    # -- figures ------------------------------------------------------------------------
    def omoi_throughput(self) -> float:
        start = time.perf_counter()
        ticket = self.submit([{"key": f"t{i}", "task_type": "noop"} for i in range(self.n)])
        poll(lambda: self.finished(ticket))
        return self.n / (time.perf_counter() - start)

    def raw_throughput(self) -> float:
        counter = f"bench:count:{uuid.uuid4()}"
        start = time.perf_counter()
        group(self.raw.noop.si(counter) for _ in range(self.n)).apply_async()
        poll(lambda: int(self.redis.get(counter) or 0) == self.n)
        return self.n / (time.perf_counter() - start)

    def omoi_hops(self, length: int = 100) -> list[float]:
        tasks = [
            {"key": f"h{i}", "task_type": "noop", "depends_on": [f"h{i - 1}"] if i else []}
            for i in range(length)
        ]
        ticket = self.submit(tasks)
        poll(lambda: self.finished(ticket))
        with self.db.session() as session:
            rows = session.execute(
                select(Task.started_at, Task.finished_at)
                .where(Task.ticket_id == uuid.UUID(ticket))
                .order_by(Task.id)
            ).all()
        return [
            (rows[i].started_at - rows[i - 1].finished_at).total_seconds() * 1000
            for i in range(1, length)
        ]

    def raw_hops(self, length: int = 100) -> list[float]:
        timeline = f"bench:hops:{uuid.uuid4()}"
        chain(self.raw.hop.si(timeline) for _ in range(length)).apply_async()
        poll(lambda: self.redis.llen(timeline) == length)
        spans = [
            tuple(map(float, v.decode().split(":"))) for v in self.redis.lrange(timeline, 0, -1)
        ]
        return [(spans[i][0] - spans[i - 1][1]) * 1000 for i in range(1, length)]

    def acceptance(self, size: int) -> float:
        tasks = [
            {"key": f"a{i}", "task_type": "noop", "depends_on": [f"a{i - 1}"] if i % 100 else []}
            for i in range(size)
        ]
        start = time.perf_counter()
        self.submit(tasks, quiet=True)
        return (time.perf_counter() - start) * 1000

    def seed_finished(self, count: int) -> None:
        """``count`` succeeded tasks (one ticket), so claims run against a grown table."""
        ticket = self.submit([], quiet=True)
        with self.db.connect() as conn:
            conn.execute(
                text(
                    "INSERT INTO tasks (id, ticket_id, phase, key, task_type, description,"
                    " capabilities, payload, priority, dependencies, unmet_dependencies, status,"
                    " attempt, retry_count, max_retries, resources, external, created_at,"
                    " queued_at, started_at, finished_at, result)"
                    " SELECT gen_random_uuid(), :t, 'PHASE_RUN', 'seed' || g, 'noop', '',"
                    " ARRAY['default'], '{}', 'MEDIUM', '{\"depends_on\": []}', 0, 'succeeded',"
                    " 1, 0, 3, '{}', false, now(), now(), now(), now(), '{\"ok\": true}'"
                    " FROM generate_series(1, :n) AS g"
                ),
                {"t": uuid.UUID(ticket), "n": count},
            )
            conn.execute(text("ANALYZE tasks"))

    def claims(self, count: int = 1000) -> tuple[float, list[float]]:
        """An external agent claiming and completing ``count`` tasks through the API (in
        process): round trips per second and each claim's latency in ms."""
        skill = f"bench{uuid.uuid4().hex[:6]}"
        self.submit(
            [
                {"key": f"e{i}", "task_type": "noop", "capabilities": [skill], "external": True}
                for i in range(count)
            ],
            quiet=True,
        )
        agent = self.quiet_app.post(
            "/api/v1/agents/register", json={"name": "bench", "capabilities": [skill]}
        ).get_json()["id"]
        latencies = []
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            task = self.quiet_app.post(f"/api/v1/agents/{agent}/claim").get_json()
            latencies.append((time.perf_counter() - t0) * 1000)
            done = self.quiet_app.post(
                f"/api/v1/tasks/{task['task_id']}/complete",
                json={"lease_token": task["lease_token"], "result": {"ok": True}},
            )
            assert done.status_code == 200
        return count / (time.perf_counter() - start), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, default=2, help="prefork children of each worker (both sides)"
    )
    args = parser.parse_args()
    bench = Bench(args.tasks, args.concurrency)
    try:
        bench.start_workers()
        bench.omoi_throughput(), bench.raw_throughput()  # warm up both
        results: dict[str, list[float]] = {}
        for _ in range(args.runs):
            results.setdefault("omoi_tps", []).append(bench.omoi_throughput())
            results.setdefault("raw_tps", []).append(bench.raw_throughput())
            omoi_hops, raw_hops = bench.omoi_hops(), bench.raw_hops()
            results.setdefault("omoi_hop_p50", []).append(percentile(omoi_hops, 50))
            results.setdefault("omoi_hop_p99", []).append(percentile(omoi_hops, 99))
            results.setdefault("raw_hop_p50", []).append(percentile(raw_hops, 50))
            results.setdefault("raw_hop_p99", []).append(percentile(raw_hops, 99))
            results.setdefault("accept_1k_ms", []).append(bench.acceptance(1_000))
            results.setdefault("accept_10k_ms", []).append(bench.acceptance(10_000))
        bench.seed_finished(100_000)
        for _ in range(args.runs):
            rate, latencies = bench.claims()
            results.setdefault("claim_rate", []).append(rate)
            results.setdefault("claim_p50", []).append(percentile(latencies, 50))
            results.setdefault("claim_p99", []).append(percentile(latencies, 99))
    finally:
        bench.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nomoi benchmarks: {args.runs} runs, {args.tasks} tasks for throughput, "
        f"{os.cpu_count()} cores, {args.concurrency} prefork children per worker; "
        "median (min, max)"
    )
    rows = [
        ("throughput omoi, tasks/s", "omoi_tps"),
        ("throughput raw Celery, tasks/s", "raw_tps"),
        ("chain hop p50 omoi, ms", "omoi_hop_p50"),
        ("chain hop p50 raw Celery, ms", "raw_hop_p50"),
        ("chain hop p99 omoi, ms", "omoi_hop_p99"),
        ("chain hop p99 raw Celery, ms", "raw_hop_p99"),
        ("accept 1,000-task ticket, ms", "accept_1k_ms"),
        ("accept 10,000-task ticket, ms", "accept_10k_ms"),
        ("claim+complete round trips/s *", "claim_rate"),
        ("claim latency p50, ms *", "claim_p50"),
        ("claim latency p99, ms *", "claim_p99"),
    ]
    for label, key in rows:
        print(f"  {label:<34}{summary(results[key])}")
    print(f"  {'throughput ratio omoi/raw':<34}{med['omoi_tps'] / med['raw_tps']:10.2f}")
    print(f"  {'hop p50 ratio omoi/raw':<34}{med['omoi_hop_p50'] / med['raw_hop_p50']:10.2f}")
    print("  * external agent through the API in process, 100,000 finished tasks in the table")


if __name__ == "__main__":
    main()
