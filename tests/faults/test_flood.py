"""A flood of concurrent ticket submissions to a real API server (gunicorn), one in ten
repeating an idempotency key: every acknowledged ticket is stored exactly once, and every
repeat returns the ticket its key created."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from omoi.persistence import Database, Ticket
from tests.support.api import bearer
from tests.support.procs import report_recovery, start_api

SUBMISSIONS = 2000
THREADS = 32


def flood(url: str, submissions: int) -> tuple[list[tuple[int, str, str]], float]:
    """Submit concurrently; every tenth request reuses an earlier key. Returns (status, key,
    ticket id) per request and the seconds it took. A 429 or 503 is retried after its
    Retry-After, as a client should."""
    keys = [f"flood-{i // 10 * 10 if i % 10 == 9 else i}" for i in range(submissions)]
    body = json.dumps(
        {"title": "flood", "tasks": [{"key": "a", "task_type": "noop", "external": True}]}
    ).encode()

    def post(key: str) -> tuple[int, str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key, **bearer()}
        while True:
            request = urllib.request.Request(f"{url}/api/v1/tickets", body, headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    return resp.status, key, json.loads(resp.read())["id"]
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503):
                    return exc.code, key, ""
                time.sleep(float(exc.headers.get("Retry-After", "1")))

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(post, keys))
    return results, time.monotonic() - started


def check_flood(results: list[tuple[int, str, str]], db: Database) -> None:
    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 201}, statuses
    by_key: dict[str, set[str]] = {}
    for _, key, ticket_id in results:
        by_key.setdefault(key, set()).add(ticket_id)
    assert all(len(ids) == 1 for ids in by_key.values())  # a repeat returns its key's ticket
    assert statuses[201] == len(by_key)  # one creation per key, the rest replays
    with db.session() as session:
        stored = session.scalar(
            select(func.count()).where(Ticket.idempotency_key.in_(list(by_key)))
        )
    assert stored == len(by_key)


def test_a_flood_of_submissions_stores_each_ticket_once(
    env: dict[str, str], fresh_database_url: str, tmp_path: Path
) -> None:
    proc, server_env = start_api({**env, "OMOI_DATABASE_URL": fresh_database_url}, tmp_path, 2)
    db = Database(fresh_database_url)
    try:
        results, seconds = flood(f"http://127.0.0.1:{server_env['OMOI_API_PORT']}", SUBMISSIONS)
        check_flood(results, db)
        report_recovery(seconds)  # the time to absorb the flood
    finally:
        proc.stop()
        db.dispose()
