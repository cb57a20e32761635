"""Benchmarks: omoi against raw Celery on the same Redis, measured in the same run.

    python -m benchmarks [--runs 3] [--tasks 2000] [--concurrency 2] [--quick]
    python -m benchmarks streams [--streams 500] [--slow 200]   (benchmarks/streams.py)

Needs PostgreSQL and Redis (``OMOI_TEST_PG_URL``, ``OMOI_TEST_REDIS_URL`` as for the tests;
it empties and uses that Redis database and the next one). Two omoi run side by side, each
with its own database and worker: one empty, one holding ``--seed`` finished tasks (100,000;
in done tickets of ten, with their events; with ``--retention`` the ticket retention sweep
deletes them, as beat would, during the measured rounds). Each of
``--runs`` rounds measures every figure on both, in turn, each beside raw Celery. It prints
medians and spreads, the ratio against raw Celery where Celery has the same thing, the ratio
seeded/empty, the CPU each part spent per task, and the peak memory of API and worker.
Throughput is measured twice for omoi, with ``noop`` and with a handler that writes a few
lines to its task's log (``benchmarks/handlers.py``), side by side in each round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from celery import chain, group
from sqlalchemy import delete, func, select, update

from benchmarks.handlers import LINES
from benchmarks.seed import Sweeping, seed_history
from omoi.api import create_app
from omoi.broker.app import make_celery
from omoi.config import Settings
from omoi.domain.auth import new_secret
from omoi.domain.enums import TicketStatus
from omoi.persistence import Database, Task, Ticket
from omoi.persistence.migrate import upgrade
from omoi.services.dispatcher import NullDispatcher

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("OMOI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("OMOI_TEST_REDIS_URL", "redis://127.0.0.1:6379/10")
REDIS_DB = int(urlsplit(REDIS_URL).path.strip("/") or 0)
TOKEN = new_secret()


def poll(done: Callable[[], bool], timeout: float = 600) -> None:
    poll_for(lambda: True if done() else None, timeout)


def poll_for(probe: Callable[[], Any], timeout: float = 600) -> Any:
    """``probe()``'s first value that is not None."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish")
        time.sleep(0.02)  # coarse enough to cost the machine nothing either side
    return value


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:10.2f}  ({min(values):.2f}..{max(values):.2f})"


def pgrep(*args: str) -> list[int]:
    found = subprocess.run(["pgrep", *args], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def children(pid: int) -> list[int]:
    return pgrep("-P", str(pid))


def in_turn(sides: list[Any], turn: int) -> list[Any]:
    """``sides`` in order on even turns, reversed on odd ones: neither always goes first."""
    return sides if turn % 2 == 0 else sides[::-1]


def peak_rss_mib(pid: int) -> float:
    """High-water resident memory of a process and its children (VmHWM), in MiB."""
    total = 0
    for p in [pid, *children(pid)]:
        status = Path(f"/proc/{p}/status").read_text()
        total += int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        )
    return total / 1024


def cpu_seconds(pids: list[int], *, own: bool = True, reaped: bool = False) -> float:
    """User + system CPU the processes have used so far (``own``), and what their ended
    children used (``reaped``: a replaced pool child, a backend that disconnected). A process
    that ends between two readings leaves the sum, its parent's reaped time takes it up."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        utime, stime, cutime, cstime = map(int, fields[11:15])
        ticks += (utime + stime if own else 0) + (cutime + cstime if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def named(command: str) -> list[int]:
    """Local processes by name: the servers' CPU is read from ``/proc`` like the workers'."""
    return pgrep("-x", command)


# Where a throughput run spends CPU; "main"/"children" are the worker that ran the jobs.
CPU_PARTS = ("worker main", "pool children", "PostgreSQL", "Redis", "benchmark process")


class Omoi:
    """One omoi under test: its own PostgreSQL database and Redis database, its API in this
    process (as test clients) and a worker. The benchmark runs two side by side, one empty
    and one holding a history, and measures them turn about, so a slow minute of a shared
    machine lands on both rather than on whichever was measured then."""

    def __init__(self, tasks: int, redis_db: int, tmp: Path) -> None:
        self.n = tasks
        self.dbname = f"omoi_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        url = PG_ADMIN.rpartition("/")[0] + "/" + self.dbname
        upgrade(url)
        broker = urlsplit(REDIS_URL)._replace(path=f"/{redis_db}").geturl()
        base = {k: v for k, v in os.environ.items() if not k.startswith("OMOI_")}
        self.env = {
            **base,
            "OMOI_DATABASE_URL": url,
            "OMOI_BROKER_URL": broker,
            "OMOI_DATA_DIR": str(tmp),
            "OMOI_WORKFLOWS_DIR": str(ROOT / "benchmarks" / "workflows"),
            "OMOI_HANDLERS": "benchmarks.handlers",
            "OMOI_BOOTSTRAP_TOKEN": TOKEN,
            "OMOI_RATE_LIMIT": "",  # a benchmark client is one token doing everything
            "PYTHONPATH": str(ROOT),
        }
        self.settings = Settings.from_env(self.env)
        self.db = Database(url)
        redis.Redis.from_url(broker).flushdb()
        self.celery = make_celery(self.settings)  # to ping its worker
        self.app = self.client(create_app(self.settings, db=self.db))
        quiet = create_app(self.settings, db=self.db, dispatcher=NullDispatcher())
        self.quiet_app = self.client(quiet)
        self.uow = quiet.extensions["omoi"].uow  # use cases called directly publish nothing
        self.worker: subprocess.Popen[bytes] | None = None

    @staticmethod
    def client(app: Any) -> Any:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
        return client

    def drop(self) -> None:
        self.db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def submit(
        self, tasks: list[dict[str, object]], quiet: bool = False, workflow: str = "dag"
    ) -> str:
        client = self.quiet_app if quiet else self.app
        body = {"title": "bench", "workflow": workflow, "tasks": tasks}
        resp = client.post("/api/v1/tickets", json=body)
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

    def run_ticket(self, tasks: list[dict[str, object]], workflow: str = "dag") -> str:
        ticket = self.submit(tasks, workflow=workflow)
        poll(lambda: self.finished(ticket))
        return ticket

    def spans(self, ticket: str) -> list[Any]:
        with self.db.session() as session:
            return list(
                session.execute(
                    select(Task.started_at, Task.finished_at)
                    .where(Task.ticket_id == uuid.UUID(ticket))
                    .order_by(Task.id)
                )
            )

    def throughput(self, task_type: str = "noop") -> float:
        start = time.perf_counter()
        self.run_ticket([{"key": f"t{i}", "task_type": task_type} for i in range(self.n)])
        return self.n / (time.perf_counter() - start)

    def hops(self, length: int = 100) -> list[float]:
        """Milliseconds from one task's end to the next one's start along a chain."""
        rows = self.spans(
            self.run_ticket(
                [
                    {"key": f"h{i}", "task_type": "noop", "depends_on": [f"h{i - 1}"] if i else []}
                    for i in range(length)
                ]
            )
        )
        return [
            (rows[i].started_at - rows[i - 1].finished_at).total_seconds() * 1000
            for i in range(1, length)
        ]

    def fan(self, width: int = 1000) -> float:
        """Seconds from submitting root → ``width`` leaves → join until the join is done."""
        leaves = [f"f{i}" for i in range(width)]
        start = time.perf_counter()
        self.run_ticket(
            [
                {"key": "root", "task_type": "noop"},
                *({"key": k, "task_type": "noop", "depends_on": ["root"]} for k in leaves),
                {"key": "join", "task_type": "noop", "depends_on": leaves},
            ]
        )
        return time.perf_counter() - start

    def gate_latency(self, tickets: int = 25) -> list[float]:
        """Milliseconds from a phase's last task ending to the next phase's task starting:
        the gate judged, the next phase's tasks created, queued and published, claimed.
        25 tickets of 4 gates each: enough samples that p99 is not simply the slowest one."""
        gaps: list[float] = []
        for _ in range(tickets):
            rows = self.spans(self.run_ticket([], workflow="bench-phases"))
            gaps += [
                (rows[i].started_at - rows[i - 1].finished_at).total_seconds() * 1000
                for i in range(1, len(rows))
            ]
        return gaps

    def acceptance(self, size: int) -> float:
        """Milliseconds to accept a ``size``-task ticket (deleted afterwards, never run)."""
        tasks = [
            {"key": f"a{i}", "task_type": "noop", "depends_on": [f"a{i - 1}"] if i % 100 else []}
            for i in range(size)
        ]
        start = time.perf_counter()
        ticket = self.submit(tasks, quiet=True)
        elapsed = (time.perf_counter() - start) * 1000
        with self.db.connect() as conn:  # its queued tasks would skew the rest
            conn.execute(delete(Ticket).where(Ticket.id == uuid.UUID(ticket)))
        return elapsed

    def wide(self, size: int = 20_000) -> tuple[float, float]:
        """A ticket of ``size`` independent tasks, accepted by the publishing API: milliseconds
        to its 201, and from the 201 to its first task running. Then cancelled, and once every
        message is out, its queue emptied: its tasks would skew the rest."""
        tasks = [{"key": f"w{i}", "task_type": "noop"} for i in range(size)]
        start = time.perf_counter()
        ticket = uuid.UUID(self.submit(tasks))
        accepted, elapsed = time.time(), (time.perf_counter() - start) * 1000

        def first_start() -> Any:
            with self.db.connect() as conn:
                return conn.execute(
                    select(func.min(Task.started_at)).where(Task.ticket_id == ticket)
                ).scalar_one()

        first = poll_for(first_start)
        assert self.quiet_app.post(f"/api/v1/tickets/{ticket}/cancel").status_code == 200

        def all_sent() -> bool:
            with self.db.connect() as conn:
                unsent = conn.execute(
                    select(func.count())
                    .select_from(Task)
                    .where(Task.ticket_id == ticket, Task.published_at.is_(None))
                ).scalar_one()
            return unsent == 0

        poll(all_sent)
        redis.Redis.from_url(self.settings.broker_url).delete("cap.default")
        return elapsed, (first.timestamp() - accepted) * 1000

    def batch_claims(self, count: int = 1000, batch: int = 10) -> float:
        """Tasks claimed and completed per second by an external agent claiming ``batch`` at
        a time (``/claims?max=``), each completed on its own."""
        skill = f"bench{uuid.uuid4().hex[:6]}"
        spec = {"task_type": "noop", "capabilities": [skill], "external": True}
        self.submit([{"key": f"b{i}", **spec} for i in range(count)], quiet=True)
        agent = self.quiet_app.post(
            "/api/v1/agents/register", json={"name": "bench", "capabilities": [skill]}
        ).get_json()["id"]
        done = 0
        start = time.perf_counter()
        while done < count:
            claimed = self.quiet_app.post(f"/api/v1/agents/{agent}/claims?max={batch}")
            for task in claimed.get_json()["items"]:
                resp = self.quiet_app.post(
                    f"/api/v1/tasks/{task['task_id']}/complete",
                    json={"lease_token": task["lease_token"], "result": {"ok": True}},
                )
                assert resp.status_code == 200
                done += 1
        return count / (time.perf_counter() - start)

    def wake_latency(self, samples: int = 50) -> list[float]:
        """Milliseconds from submitting a one-task ticket to a waiting agent's long-poll claim
        answering with its task (so the submission's own time is included): the claim waits
        in a thread of this process, on the same API, woken through Redis pub/sub by the
        submission's commit."""
        skill = f"bench{uuid.uuid4().hex[:6]}"
        agent = self.quiet_app.post(
            "/api/v1/agents/register", json={"name": "waiter", "capabilities": [skill]}
        ).get_json()["id"]
        bell = self.app.application.extensions["omoi"].doorbell
        waiter = self.client(self.app.application)  # a test client is one thread's
        latencies = []
        for i in range(samples):
            answers: list[tuple[float, Any]] = []

            def wait(answers: list[tuple[float, Any]] = answers) -> None:
                resp = waiter.post(f"/api/v1/agents/{agent}/claim?wait=30")
                answers.append((time.perf_counter(), resp.get_json()))

            claim = threading.Thread(target=wait)
            claim.start()
            poll(lambda: bell.waiting == 1)
            spec = {"task_type": "noop", "capabilities": [skill], "external": True}
            submitted = time.perf_counter()
            self.submit([{"key": f"w{i}", **spec}])
            claim.join()
            answered, task = answers[0]
            latencies.append((answered - submitted) * 1000)
            self.quiet_app.post(
                f"/api/v1/tasks/{task['task_id']}/complete",
                json={"lease_token": task["lease_token"], "result": {"ok": True}},
            )
        return latencies

    def claims(self, count: int = 1000, behind: int = 0) -> tuple[float, list[float]]:
        """An external agent claiming and completing ``count`` tasks through the API (in
        process): round trips per second and each claim's latency in ms. With ``behind``,
        that many tasks for the Celery worker were queued and published first, ahead in claim
        order: a backlog in the broker, which the claims must pass over (deleted after)."""
        backlog = None
        if behind:
            queued = [{"key": f"q{i}", "task_type": "noop"} for i in range(behind)]
            backlog = uuid.UUID(self.submit(queued, quiet=True))
            with self.db.connect() as conn:  # as if sent: the broker holds them, in this story
                conn.execute(
                    update(Task).where(Task.ticket_id == backlog).values(published_at=func.now())
                )
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
            assert task and "task_id" in task, task  # a refusal says why
            latencies.append((time.perf_counter() - t0) * 1000)
            done = self.quiet_app.post(
                f"/api/v1/tasks/{task['task_id']}/complete",
                json={"lease_token": task["lease_token"], "result": {"ok": True}},
            )
            assert done.status_code == 200
        rate = count / (time.perf_counter() - start)
        if backlog is not None:
            with self.db.connect() as conn:
                conn.execute(delete(Ticket).where(Ticket.id == backlog))
        return rate, latencies

    def seed_finished(self, count: int) -> dict[str, float]:
        """``count`` succeeded tasks with their two events each, in done tickets of ten a
        month old, as a real history leaves (``benchmarks/seed.py``), vacuumed and
        checkpointed; returns the seconds it took and the bytes the database grew by."""
        size = "SELECT pg_database_size(current_database())"
        with psycopg.connect(self.settings.database_url, autocommit=True) as pg:
            before = pg.execute(size).fetchone()
        with self.db.connect() as conn:
            made = seed_history(conn, count)
        # A history accrues over days, vacuumed as it goes; a bulk load measured at once would
        # time autovacuum and the checkpoint digesting 300,000 fresh rows instead.
        self.vacuum()
        with psycopg.connect(self.settings.database_url, autocommit=True) as pg:
            pg.execute("CHECKPOINT")
            after = pg.execute(size).fetchone()
        assert before is not None and after is not None
        return {"seconds": made["seconds"], "bytes": after[0] - before[0]}

    def vacuum(self) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as pg:
            pg.execute("VACUUM (ANALYZE)")


class Bench:
    """Raw Celery and two omoi installations (``empty`` and ``seeded``) on one machine."""

    def __init__(self, tasks: int, concurrency: int) -> None:
        self.n = tasks
        self.concurrency = concurrency
        self.tmp = Path(tempfile.mkdtemp(prefix="omoi-bench-"))
        self.empty = Omoi(tasks, REDIS_DB, self.tmp)
        self.seeded = Omoi(tasks, REDIS_DB + 1, self.tmp)
        os.environ.update(self.empty.env)  # raw Celery: the empty omoi's Redis and database
        from benchmarks import raw_celery

        self.raw = raw_celery
        self.redis = redis.Redis.from_url(self.empty.settings.broker_url)
        with psycopg.connect(self.empty.settings.database_url, autocommit=True) as conn:
            conn.execute(raw_celery.RECORD_DDL)
            conn.execute(raw_celery.FLOOR_DDL)
        self.procs: list[subprocess.Popen[bytes]] = []
        # A server running without autovacuum (some development machines do) would leave
        # every claimed or finished task's old row version, and planner statistics from
        # before the first task, in the way of every query.
        with psycopg.connect(PG_ADMIN) as pg:
            self.autovacuum = pg.execute("SHOW autovacuum").fetchone() == ("on",)

    def spawn(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / "processes.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def start_workers(self) -> None:
        for name, omoi in (("empty", self.empty), ("seeded", self.seeded)):
            omoi.worker = self.spawn(
                [
                    *(sys.executable, "-m", "omoi", "worker"),
                    *("--concurrency", str(self.concurrency), "--loglevel", "WARNING"),
                    *("--name", f"omoi-bench-{name}@localhost"),
                ],
                omoi.env,
            )
        self.raw_worker = self.spawn(
            [
                *(sys.executable, "-m", "celery", "-A", "benchmarks.raw_celery", "worker"),
                *("-P", "prefork", "-c", str(self.concurrency), "-Q", self.raw.QUEUE),
                *("--loglevel", "WARNING", "-n", "raw-bench@localhost"),
            ],
            self.empty.env,
        )
        poll(lambda: len(self.raw.app.control.ping(timeout=0.5) or []) >= 2, timeout=60)
        poll(lambda: bool(self.seeded.celery.control.ping(timeout=0.5)), timeout=60)

    def cpu_per_task(
        self, worker: subprocess.Popen[bytes] | None, run: Callable[[], float]
    ) -> tuple[float, dict[str, float]]:
        """``run()``'s figure and the CPU milliseconds per task each part spent meanwhile:
        ``worker``'s main process and pool children, every local PostgreSQL and Redis
        process, and this process (the API in process, submitting and polling)."""
        assert worker is not None

        def now() -> list[float]:
            return [
                cpu_seconds([worker.pid]),
                cpu_seconds(children(worker.pid))
                + cpu_seconds([worker.pid], own=False, reaped=True),
                cpu_seconds(named("postgres"), reaped=True),
                cpu_seconds(named("redis-server"), reaped=True),
                time.process_time(),
            ]

        before = now()
        figure = run()
        spent = [(b - a) * 1000 / self.n for a, b in zip(before, now(), strict=True)]
        return figure, dict(zip(CPU_PARTS, spent, strict=True))

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)
        self.empty.drop()
        self.seeded.drop()

    def raw_throughput(self, recorded: bool = False) -> float:
        """Raw Celery's jobs only count themselves in Redis, or (``recorded``) also commit a
        row each to PostgreSQL: the least glue that keeps a durable record of the work."""
        job = self.raw.recorded if recorded else self.raw.noop
        counter = f"bench:count:{uuid.uuid4()}"
        start = time.perf_counter()
        group(job.si(counter) for _ in range(self.n)).apply_async()
        poll(lambda: int(self.redis.get(counter) or 0) == self.n)
        return self.n / (time.perf_counter() - start)

    def floor_throughput(self) -> float:
        """The contract's floor: raw Celery jobs each running omoi's two statements per
        attempt on rows the producer inserted first in one statement, as a submission does."""
        counter = f"bench:floor:{uuid.uuid4()}"
        start = time.perf_counter()
        with psycopg.connect(self.empty.settings.database_url, autocommit=True) as pg:
            ids = [
                str(r[0])
                for r in pg.execute(
                    "INSERT INTO floor_tasks (id, ticket_id, phase, key, task_type, description,"
                    " capabilities, route, payload, priority, dependencies, unmet_dependencies,"
                    " status, attempt, retry_count, max_retries, resources, external,"
                    " created_at, queued_at) SELECT gen_random_uuid(), gen_random_uuid(),"
                    " 'PHASE_RUN', 'f' || g, 'noop', '', ARRAY['default'], 'default', '{}',"
                    " 'MEDIUM', '{\"depends_on\": []}', 0, 'queued', 1, 0, 3, '{}', false,"
                    " now(), now() FROM generate_series(1, %s) AS g RETURNING id",
                    (self.n,),
                )
            ]
        group(self.raw.floor.si(counter, i) for i in ids).apply_async()
        poll(lambda: int(self.redis.get(counter) or 0) == self.n)
        return self.n / (time.perf_counter() - start)

    def raw_hops(self, length: int = 100) -> list[float]:
        timeline = f"bench:hops:{uuid.uuid4()}"
        chain(self.raw.hop.si(timeline) for _ in range(length)).apply_async()
        poll(lambda: self.redis.llen(timeline) == length)
        spans = [
            tuple(map(float, v.decode().split(":"))) for v in self.redis.lrange(timeline, 0, -1)
        ]
        return [(spans[i][0] - spans[i - 1][1]) * 1000 for i in range(1, length)]

    def raw_fan(self, width: int = 1000) -> float:
        counter, done = f"bench:fan:{uuid.uuid4()}", f"bench:fan-done:{uuid.uuid4()}"
        start = time.perf_counter()
        self.raw.fan_root.delay(counter, done, width)
        poll(lambda: bool(self.redis.exists(done)))
        return time.perf_counter() - start

    def api_memory(self) -> float:
        """Peak RSS of a gunicorn API (one process) that accepted a 10,000-task ticket and
        served reads of it."""
        port = 5000 + os.getpid() % 1000
        api = self.spawn(
            [sys.executable, "-m", "omoi", "api", "--workers", "1", "--port", str(port)],
            self.empty.env,
        )
        url = f"http://127.0.0.1:{port}"

        def call(path: str, body: Any = None) -> Any:
            request = urllib.request.Request(
                url + path,
                json.dumps(body).encode() if body is not None else None,
                {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(request, timeout=60) as resp:
                return json.loads(resp.read())

        def ready() -> bool:
            try:
                return bool(call("/readyz"))
            except OSError:
                return False

        poll(ready, timeout=60)
        tasks = [{"key": f"m{i}", "task_type": "noop", "external": True} for i in range(10_000)]
        ticket = call("/api/v1/tickets", {"title": "memory", "tasks": tasks})["id"]
        call(f"/api/v1/tasks?ticket_id={ticket}&limit=1000")
        call("/api/v1/tickets?limit=500")
        return peak_rss_mib(api.pid)

    def measure(self, runs: int, results: dict[str, list[float]]) -> None:
        """``runs`` rounds; each measures the empty omoi and the seeded one, in turn, each
        beside raw Celery (figures of the seeded one are keyed ``…@seeded``)."""
        sides = [("", self.empty), ("@seeded", self.seeded)]
        for round_ in range(runs):
            if not self.autovacuum:  # do between rounds what the server would do meanwhile
                for _, omoi in sides:
                    omoi.vacuum()
            order = in_turn(sides, round_)
            for tag, omoi in order:
                self.measure_one(omoi, results, tag)
            self.measure_acceptance(order, results)

    def measure_acceptance(
        self, sides: list[tuple[str, Omoi]], results: dict[str, list[float]]
    ) -> None:
        """Accepting a ticket takes the API alone, a second or less: the two omoi accept
        theirs by turns, ticket for ticket, so a slow few seconds of the machine fall on both.
        Each records the median of its three tickets of each size (one garbage collection
        landing on a 0.1 s request does not make the round)."""
        for tag, omoi in sides:
            accepted, first = omoi.wide()
            results.setdefault(f"accept_wide_ms{tag}", []).append(accepted)
            results.setdefault(f"wide_first_ms{tag}", []).append(first)
        for size, key in ((1_000, "accept_1k_ms"), (10_000, "accept_10k_ms")):
            times: dict[str, list[float]] = {tag: [] for tag, _ in sides}
            for turn in range(3):
                for tag, omoi in in_turn(sides, turn):
                    times[tag].append(omoi.acceptance(size))
            for tag, values in times.items():
                results.setdefault(f"{key}{tag}", []).append(statistics.median(values))

    def measure_one(self, omoi: Omoi, results: dict[str, list[float]], tag: str) -> None:
        def add(key: str, value: float) -> None:
            results.setdefault(f"{key}{tag}", []).append(value)

        for key, worker, run in (
            ("omoi", omoi.worker, omoi.throughput),
            ("logged", omoi.worker, lambda: omoi.throughput("bench.logging")),
            ("raw", self.raw_worker, self.raw_throughput),
            ("recorded", self.raw_worker, lambda: self.raw_throughput(recorded=True)),
            ("floor", self.raw_worker, self.floor_throughput),
        ):
            rate, cpu = self.cpu_per_task(worker, run)
            add(f"{key}_tps", rate)
            for part, ms in cpu.items():
                add(f"cpu:{key}:{part}", ms)
        omoi_hops, raw_hops = omoi.hops(), self.raw_hops()
        add("omoi_hop_p50", percentile(omoi_hops, 50))
        add("omoi_hop_p99", percentile(omoi_hops, 99))
        add("raw_hop_p50", percentile(raw_hops, 50))
        add("raw_hop_p99", percentile(raw_hops, 99))
        add("omoi_fan_s", omoi.fan())
        add("raw_fan_s", self.raw_fan())
        gaps = omoi.gate_latency()
        add("gate_p50", percentile(gaps, 50))
        add("gate_p99", percentile(gaps, 99))
        rate, latencies = omoi.claims()
        add("claim_rate", rate)
        add("claim_p50", percentile(latencies, 50))
        add("claim_p99", percentile(latencies, 99))
        add("batch_claim_rate", omoi.batch_claims())
        wakes = omoi.wake_latency()
        add("wake_p50", percentile(wakes, 50))
        add("wake_p99", percentile(wakes, 99))
        _, latencies = omoi.claims(behind=10_000)
        add("claim_backlog_p50", percentile(latencies, 50))
        add("claim_backlog_p99", percentile(latencies, 99))


# (label, omoi's key, raw Celery's key or None); rates are better higher, times lower
RATES = {"omoi_tps", "logged_tps", "claim_rate", "batch_claim_rate"}
ROWS = [
    ("throughput, tasks/s", "omoi_tps", "raw_tps"),
    ("  vs raw + a PostgreSQL insert", "omoi_tps", "recorded_tps"),
    ("  vs the contract's floor ‡", "omoi_tps", "floor_tps"),
    (f"  logging {LINES} lines a task", "logged_tps", "raw_tps"),
    ("chain hop p50, ms", "omoi_hop_p50", "raw_hop_p50"),
    ("chain hop p99, ms", "omoi_hop_p99", "raw_hop_p99"),
    ("fan-out/fan-in of 1,000, s", "omoi_fan_s", "raw_fan_s"),
    ("gate to next phase p50, ms", "gate_p50", None),
    ("gate to next phase p99, ms", "gate_p99", None),
    ("accept 1,000-task ticket, ms", "accept_1k_ms", None),
    ("accept 10,000-task ticket, ms", "accept_10k_ms", None),
    ("accept 20,000 independent, ms", "accept_wide_ms", None),
    ("  its first task running, ms §", "wide_first_ms", None),
    ("claim+complete round trips/s *", "claim_rate", None),
    ("  in batches of 10 *", "batch_claim_rate", None),
    ("claim latency p50, ms *", "claim_p50", None),
    ("claim latency p99, ms *", "claim_p99", None),
    ("  behind 10,000 for Celery, p50 *", "claim_backlog_p50", None),
    ("  behind 10,000 for Celery, p99 *", "claim_backlog_p99", None),
    ("long-poll claim, submit to task p50 ms *", "wake_p50", None),
    ("long-poll claim, submit to task p99 ms *", "wake_p99", None),
]


def worse_by(key: str, empty: float, seeded: float) -> float:
    """Per cent by which the figure is worse with rows than without."""
    return ((empty / seeded if key in RATES else seeded / empty) - 1) * 100


def report(results: dict[str, list[float]], seeded: int) -> None:
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"{'':<32}{'omoi':>10}  {'(spread)':<17}{'raw Celery':>11}{'omoi/raw':>10}"
        f"{f'omoi with {seeded:,} rows':>24}{'worse by':>10}{'vs raw †':>10}"
    )
    for label, key, raw in ROWS:
        line = f"  {label:<30}{summary(results[key]):<29}"
        line += f"{med[raw]:11.2f}{med[key] / med[raw]:10.2f}" if raw else f"{'':21}"
        grown = med[key + "@seeded"]
        line += f"{grown:24.2f}{worse_by(key, med[key], grown):9.0f}%"
        if raw:  # against the raw Celery measured beside each: the machine's drift cancels
            line += f"{worse_by(key, med[key] / med[raw], grown / med[raw + '@seeded']):9.0f}%"
        print(line)
    for side in ("", "@seeded"):  # the cost of a task log, beside the no-log baseline
        logged, bare = med[f"logged_tps{side}"], med[f"omoi_tps{side}"]
        label = f"{'with rows: ' if side else ''}logging {LINES} lines a task / noop"
        print(f"  {label:<52}{bare:10.2f}{logged / bare:10.2f}")
    for side in ("", "@seeded"):  # what the contract itself costs raw Celery
        floor, raw = med[f"floor_tps{side}"], med[f"raw_tps{side}"]
        label = f"{'with rows: ' if side else ''}the contract's floor / raw Celery"
        print(f"  {label:<52}{floor:10.2f}{floor / raw:10.2f}")
    for label, key, raw in (
        ("raw Celery throughput", "omoi_tps", "raw_tps"),
        ("the contract's floor throughput", "omoi_tps", "floor_tps"),
        ("raw + PostgreSQL insert throughput", "omoi_tps", "recorded_tps"),
        ("raw Celery hop p50", "omoi_hop_p50", "raw_hop_p50"),
    ):
        base, ours = med[f"{raw}@seeded"], med[f"{key}@seeded"]
        print(f"  {f'with rows: {label}, ratio':<52}{base:10.2f}{ours / base:10.2f}")

    sides = {
        "omoi": "omoi",
        "logged": "logging",
        "raw": "raw",
        "recorded": "raw+insert",
        "floor": "floor",
    }
    title = "CPU per task in the throughput runs, ms"
    print(f"\n  {title:<42}" + "".join(f"{name:>11}" for name in sides.values()))
    cpu = {(side, part): med[f"cpu:{side}:{part}"] for side in sides for part in CPU_PARTS}
    for side in sides:
        cpu[side, "total"] = sum(cpu[side, part] for part in CPU_PARTS)
    for part in (*CPU_PARTS, "total"):
        print(f"    {part:<40}" + "".join(f"{cpu[side, part]:11.2f}" for side in sides))
    # CPU per task times tasks per second: how much of the machine a throughput run kept busy
    busy = [cpu[side, "total"] * med[f"{side}_tps"] / 1000 for side in sides]
    print(f"    {'cores busy (total * tasks/s)':<40}" + "".join(f"{b:11.2f}" for b in busy))


def main() -> None:
    if sys.argv[1:2] == ["streams"]:
        from benchmarks import streams

        streams.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=100_000, help="finished tasks to seed")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="prefork children of each worker (both sides)"
    )
    parser.add_argument("--quick", action="store_true", help="one small run: a smoke test")
    parser.add_argument(
        "--retention",
        action="store_true",
        help="run the ticket retention sweep on the seeded omoi during the measured rounds",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.tasks, args.seed = 1, 200, 5_000
    bench = Bench(args.tasks, args.concurrency)
    results: dict[str, list[float]] = {}
    try:
        seeding = bench.seeded.seed_finished(args.seed)
        bench.start_workers()
        bench.empty.throughput(), bench.seeded.throughput(), bench.raw_throughput()  # warm up
        sweeping = Sweeping(bench.seeded.db) if args.retention else None
        with sweeping or contextlib.nullcontext():
            bench.measure(args.runs, results)
        assert bench.empty.worker is not None
        worker_mib = peak_rss_mib(bench.empty.worker.pid)
        api_mib = bench.api_memory()
    finally:
        bench.stop()
    print(
        f"\nomoi benchmarks: {args.runs} runs, {args.tasks} tasks for throughput, "
        f"{os.cpu_count()} cores, {args.concurrency} prefork children per worker; "
        "median (min..max)"
    )
    report(results, args.seed)
    grown = seeding["bytes"] / args.seed
    print(
        f"  seeding {args.seed:,} finished tasks took {seeding['seconds']:.1f} s; the database"
        f" grew by {seeding['bytes'] / 2**20:,.0f} MiB, {grown:,.0f} bytes per finished task"
        " (its tickets, tasks, events and their indexes, vacuumed)"
    )
    if sweeping is not None:
        print(
            "  the 'with rows' figures were measured while the retention sweep deleted the"
            f" seeded tickets, as beat does every 5 s: {sweeping.summary()}"
        )
    if not bench.autovacuum:
        print(
            "  PostgreSQL runs with autovacuum off: both databases were vacuumed before each round"
        )
    print(f"  {'peak memory, worker (main + children), MiB':<42}{worker_mib:10.1f}")
    print(f"  {'peak memory, API (gunicorn, 1 process), MiB':<42}{api_mib:10.1f}")
    print("  * an external agent through the API in process")
    print("  † worse by, as a ratio to the raw Celery measured beside each in the same rounds")
    print("  § after the 201; negative: it was running before the answer reached the client")
    print(
        "  ‡ raw Celery jobs each running omoi's two statements per attempt on a copy of its"
        " tasks table: a claim under a lease committed without waiting for the flush, then the"
        " result guarded by that lease, committed durably"
    )


if __name__ == "__main__":
    main()
