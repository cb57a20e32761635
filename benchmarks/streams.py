"""Strangers against the API: how /healthz, a ticket GET and a ticket POST answer while 500
event streams are open and 200 clients send their headers a byte at a time (slowloris),
beside the same requests with nothing else open.

    python -m benchmarks streams [--streams 500] [--slow 200] [--rounds 200] [--workers 2]

A real API (``omoi api``: gunicorn's gevent workers, omoi/gunicorn_conf.py) on a PostgreSQL
database of its own, on loopback; the crowd runs in a process of its own (benchmarks/load.py)
and the streams follow every event, so each POST is sent to all of them. The streams belong
to 50 read tokens (as many board tabs of many people), within each token's cap. Set
``GUNICORN_CMD_ARGS="--worker-class gthread --threads 8"`` to see the threaded server it
replaced: its 16 threads are taken by the first 16 streams, and the crowd never gets ready.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import uuid

import psycopg

from benchmarks.__main__ import PG_ADMIN, REDIS_URL, percentile, poll
from benchmarks.load import CrowdProcess, probe
from omoi.domain.auth import new_secret
from omoi.persistence import Database
from omoi.persistence.migrate import upgrade
from omoi.services import tokens
from omoi.services.events import latest_id
from tests.support.procs import ROOT, free_port

READERS = 50
KINDS = (("healthz", "GET /healthz"), ("get", "GET a ticket"), ("post", "POST a ticket"))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks streams")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200, help="requests of each kind")
    parser.add_argument("--workers", type=int, default=2, help="API processes")
    args = parser.parse_args(argv)
    name = f"omoi_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rpartition("/")[0] + "/" + name
    upgrade(url)
    admin, port = new_secret(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OMOI_")},
        "OMOI_DATABASE_URL": url,
        "OMOI_BROKER_URL": REDIS_URL,
        "OMOI_DATA_DIR": tempfile.mkdtemp(prefix="omoi-bench-streams-"),
        "OMOI_BOOTSTRAP_TOKEN": admin,
        "OMOI_RATE_LIMIT": "",  # one probe token does everything
        "PYTHONPATH": str(ROOT),
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "omoi", "api", "--workers", str(args.workers), "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = Database(url)
    base = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: _ready(base), timeout=60)
        readers = [tokens.create(db, f"tab-{i}", ["read"])[1] for i in range(READERS)]
        ticket = _post(base, admin, {"title": "read me", "tasks": []})["id"]
        probe(base, admin, ticket, 20)  # warm up: connections, caches
        quiet = probe(base, admin, ticket, args.rounds)
        crowd = CrowdProcess(base, readers, args.streams, args.slow, after=latest_id(db))
        loaded = probe(base, admin, ticket, args.rounds)
        tally = crowd.finish(events=args.streams * args.rounds)
    finally:
        api.terminate()
        api.wait(30)
        db.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    crowd_name = f"{args.streams} streams + {args.slow} slow clients"
    print(
        f"\nomoi API under strangers: {args.workers} gevent processes, PostgreSQL, "
        f"{os.cpu_count()} cores; {args.rounds} requests of each kind, one at a time; ms"
    )
    print(f"  {'':<16}{'nothing else open':>20}{crowd_name:>36}")
    print(f"  {'':<16}{'p50':>10}{'p99':>10}{'p50':>18}{'p99':>10}")
    for key, label in KINDS:
        line = f"  {label:<16}"
        line += "".join(f"{percentile(quiet[key], p):10.1f}" for p in (50, 99))
        line += f"{percentile(loaded[key], 50):18.1f}{percentile(loaded[key], 99):10.1f}"
        print(line)
    print(
        f"  streams: {tally['streams_open']} open, {tally['streams_refused']} refused, "
        f"{tally['streams_closed']} ended early; {tally['events']:,} events delivered; "
        f"slow clients cut off at the header deadline and replaced: {tally['slow_cut']}"
    )


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _post(base: str, token: str, body: object) -> dict[str, str]:
    request = urllib.request.Request(
        f"{base}/api/v1/tickets",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


if __name__ == "__main__":
    main(sys.argv[1:])
