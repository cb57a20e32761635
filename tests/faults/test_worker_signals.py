"""A pool child killed mid-task, and a worker told to stop (SIGTERM) under load: nothing is
lost, nothing left running, no effect applied twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import redis

from tests.faults.test_lost_workers import run_on_a_victim
from tests.support.api import submit, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, report_recovery, start_worker, wait_for


def pool_children(proc: Proc) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def effects_of(client: Any, redis_client: redis.Redis, ticket_id: str) -> list[int]:
    tasks = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
    return [int(redis_client.get(EFFECT_KEY.format(t["id"])) or 0) for t in tasks]


def test_a_killed_pool_child_is_recovered_and_the_worker_keeps_working(
    client: Any,
    beat: Proc,
    victims: tuple[str, list[Proc]],
    redis_client: redis.Redis,
) -> None:
    ticket, task_id, worker = run_on_a_victim(client, victims, seconds=3)
    (child,) = pool_children(worker)  # one-process pool: this child runs the task
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    recovery = time.monotonic() - killed_at
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert [a["outcome"] for a in task["attempts"]] == ["retry_scheduled", "succeeded"]
    assert task["attempts"][0]["error"]["category"] == "lost"
    assert int(redis_client.get(EFFECT_KEY.format(task_id))) == 1
    assert worker.popen.poll() is None  # the main process replaced its child and lives on
    assert recovery < 30, recovery
    report_recovery(recovery)


def test_sigterm_under_load_finishes_or_requeues_every_task(
    client: Any, env: dict[str, str], tmp_path: Any, redis_client: redis.Redis
) -> None:
    capability = f"term{os.getpid()}{time.monotonic_ns() % 100000}"
    stopping, _ = start_worker(env, tmp_path, concurrency=2, capabilities=capability)
    ticket = submit(
        client,
        [
            {
                "key": f"t{i}",
                "task_type": "effect",
                "capabilities": [capability],
                "payload": {"seconds": 0.5},
            }
            for i in range(16)
        ],
    )
    wait_for(
        lambda: (
            client.get(f"/api/v1/tickets/{ticket['id']}")
            .get_json()["task_counts"]
            .get("succeeded", 0)
            >= 2
        ),
        timeout=30,
        what="the load to be under way",
    )
    stopping.popen.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
    terminated = time.monotonic()
    assert stopping.popen.wait(30) == 0
    survivor, _ = start_worker(env, tmp_path, concurrency=2, capabilities=capability)
    try:
        final = wait_finished(client, ticket["id"], timeout=60)
    finally:
        survivor.stop()
        stopping.stop()
    assert final["task_counts"] == {"succeeded": 16}
    assert effects_of(client, redis_client, ticket["id"]) == [1] * 16
    report_recovery(time.monotonic() - terminated)
