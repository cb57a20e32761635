"""Strangers cannot stall the API: with 100 event streams open and 50 clients sending their
headers a byte at a time, a real API process (one gevent worker) still answers /healthz, a
ticket read and a ticket POST promptly; the streams get every event meanwhile, and the slow
clients are cut off at the header deadline. ``python -m benchmarks streams`` measures the
full-size case (500 streams, 200 slow clients)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid
from pathlib import Path

from benchmarks.load import SLOW_BYTES, CrowdProcess, probe
from omoi.persistence import Database
from omoi.services import tokens
from omoi.services.events import latest_id
from tests.support.api import ADMIN_TOKEN
from tests.support.procs import start_api

BOUND_MS = 1000.0  # generous: a shared 2-core machine; the benchmark holds 100 ms


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


def test_open_streams_and_slow_clients_do_not_stall_health_reads_or_posts(
    env: dict[str, str], fresh_database_url: str, tmp_path: Path
) -> None:
    """On a database of its own: no other test's agents claim the tickets it posts."""
    db = Database(fresh_database_url)
    proc, server_env = start_api({**env, "OMOI_DATABASE_URL": fresh_database_url}, tmp_path)
    url = f"http://127.0.0.1:{server_env['OMOI_API_PORT']}"
    try:
        readers = [tokens.create(db, f"tab-{uuid.uuid4().hex[:6]}", ["read"])[1] for _ in range(10)]
        request = urllib.request.Request(
            f"{url}/api/v1/tickets",
            json.dumps({"title": "read me", "tasks": []}).encode(),
            {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            ticket = json.loads(resp.read())["id"]
        crowd = CrowdProcess(url, readers, streams=100, slow=50, after=latest_id(db))
        times = probe(url, ADMIN_TOKEN, ticket, rounds=50)
        tally = crowd.finish(events=100 * 50)  # each POST's ticket.created, to every stream
    finally:
        proc.stop()
        db.dispose()
    for kind, values in times.items():
        assert p99(values) < BOUND_MS, f"{kind}: p99 {p99(values):.0f} ms"
    assert tally["streams_open"] == 100
    assert tally["streams_refused"] == tally["streams_closed"] == 0
    assert tally["events"] >= 100 * 50
    assert tally["slow_connected"] == 50


def test_a_client_sending_its_headers_slowly_is_cut_off_at_the_deadline(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A byte every half second never completes a request: the server closes the connection
    after its 5 s header deadline (gunicorn's keepalive under gevent), freeing it."""
    proc, server_env = start_api(env, tmp_path, workers=1)
    try:
        sock = socket.create_connection(("127.0.0.1", int(server_env["OMOI_API_PORT"])))
        sock.settimeout(0.5)
        start = time.monotonic()
        for byte in SLOW_BYTES:
            try:
                sock.send(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
            assert time.monotonic() - start < 15, "still connected after 15 s"
        cut_after = time.monotonic() - start
        sock.close()
    finally:
        proc.stop()
    assert 4 < cut_after < 10
