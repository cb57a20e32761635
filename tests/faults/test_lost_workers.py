"""A worker that dies or freezes mid-task: its attempt is recovered as ``lost`` within the
heartbeat timeout plus a sweep, finishes on another worker, and a late result is refused —
also when every pool slot of the fleet is busy, since no sweep needs one."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from omoi.config import Settings
from tests.faults.conftest import victim_workers
from tests.support.api import cut_off_client, make_app, submit, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, report_recovery, start_beat, wait_for
from tests.support.services import RedisServer

HEARTBEAT_TIMEOUT, SWEEP, REPUBLISH_AGE = 4, 1, 2  # tests/conftest.py TEST_ENV
SLACK = 5  # a loaded 2-core machine


def running_on(client: Any, task_id: str, procs: list[Proc]) -> Proc:
    """The worker process whose agent holds the task's running attempt."""

    def holder() -> Proc | None:
        task = client.get(f"/api/v1/tasks/{task_id}").get_json()
        if task["status"] != "running" or task["agent_id"] is None:
            return None
        pid = client.get(f"/api/v1/agents/{task['agent_id']}").get_json()["pid"]
        return next((p for p in procs if p.pid == pid), None)

    return wait_for(holder, timeout=30, what="the task to run on a victim")


def run_on_a_victim(
    client: Any, victims: tuple[str, list[Proc]], seconds: float, task_type: str = "effect"
) -> tuple[dict[str, Any], str, Proc]:
    """Submit one task for the victims' capability; returns it once running, and its worker."""
    capability, procs = victims
    ticket = submit(
        client,
        [
            {
                "key": "work",
                "task_type": task_type,
                "capabilities": [capability],
                "payload": {"seconds": seconds},
            }
        ],
    )
    task_id = ticket["tasks"][0]["id"]
    return ticket, task_id, running_on(client, task_id, procs)


def test_kill_9_mid_task_finishes_exactly_once_elsewhere(
    client: Any, beat: Proc, victims: tuple[str, list[Proc]], redis_client: redis.Redis
) -> None:
    procs = victims[1]
    ticket, task_id, doomed = run_on_a_victim(client, victims, seconds=3)
    os.killpg(doomed.pid, signal.SIGKILL)  # main process and pool children, mid-sleep
    killed_at = time.monotonic()
    assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    recovery = time.monotonic() - killed_at
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert [a["outcome"] for a in task["attempts"]] == ["retry_scheduled", "succeeded"]
    assert task["attempts"][0]["error"]["category"] == "lost"
    survivor = next(p for p in procs if p is not doomed)
    assert client.get(f"/api/v1/agents/{task['agent_id']}").get_json()["pid"] == survivor.pid
    assert int(redis_client.get(EFFECT_KEY.format(task_id))) == 1  # killed before its effect
    # lost within timeout + sweep, then the retry's backoff (≤ 1.25 s) and the 3 s run
    assert recovery < HEARTBEAT_TIMEOUT + SWEEP + 1.25 + 3 + 5, recovery
    report_recovery(recovery)


def test_a_frozen_worker_loses_its_task_and_its_late_result_is_refused(
    client: Any, beat: Proc, victims: tuple[str, list[Proc]]
) -> None:
    ticket, task_id, frozen = run_on_a_victim(client, victims, seconds=2)
    frozen_agent = client.get(f"/api/v1/tasks/{task_id}").get_json()["agent_id"]
    os.killpg(frozen.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    report_recovery(time.monotonic() - frozen_at)
    assert client.get(f"/api/v1/agents/{frozen_agent}").get_json()["status"] == "stale"
    os.killpg(frozen.pid, signal.SIGCONT)

    def superseded() -> bool:
        task = client.get(f"/api/v1/tasks/{task_id}").get_json()
        return "task.superseded" in [e["type"] for e in task["timeline"]]

    wait_for(superseded, timeout=30, what="the frozen attempt's late result to be refused")
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    kinds = [e["type"] for e in task["timeline"]]
    assert kinds.count("task.succeeded") == 1
    assert (task["status"], task["attempt"]) == ("succeeded", 2)
    assert task["agent_id"] != frozen_agent
    wait_for(
        lambda: (
            client.get(f"/api/v1/agents/{frozen_agent}").get_json()["status"] in ("idle", "busy")
        ),
        timeout=15,
        what="the thawed agent's heartbeat to revive it",
    )


def test_a_killed_holders_lock_expires_and_the_next_task_proceeds(
    client: Any, beat: Proc, victims: tuple[str, list[Proc]], worker: Proc
) -> None:
    capability, procs = victims
    name = f"lock:{uuid.uuid4().hex[:6]}"
    holder = submit(
        client,
        [
            {
                "key": "holder",
                "task_type": "effect",
                "resources": [name],
                "capabilities": [capability],
                "max_retries": 0,
                "payload": {"seconds": 30},
            }
        ],
    )
    holder_id = holder["tasks"][0]["id"]
    doomed = running_on(client, holder_id, procs)
    wait_for(
        lambda: client.get(f"/api/v1/locks?name={name}").get_json()["held"],
        what="the holder to take its lock",
    )
    waiter = submit(client, [{"key": "waiter", "task_type": "effect", "resources": [name]}])
    waiter_id = waiter["tasks"][0]["id"]
    wait_for(
        lambda: client.get(f"/api/v1/locks?name={name}").get_json()["waiting"],
        what="the second task to wait for the lock",
    )
    for proc in procs:  # the holder's worker and its twin, so nothing retries the holder
        os.killpg(proc.pid, signal.SIGKILL)
    assert doomed in procs
    assert wait_finished(client, waiter["id"], timeout=60)["status"] == "done"
    held = client.get(f"/api/v1/tasks/{holder_id}").get_json()
    assert (held["status"], held["error"]["category"]) == ("failed", "lost")
    assert client.get(f"/api/v1/tasks/{waiter_id}").get_json()["retry_count"] == 0


def waiting(broker: redis.Redis) -> list[tuple[str, str]]:
    """(job name, Celery id) of every message waiting in any queue of the broker."""
    lists = [k for k in broker.scan_iter() if broker.type(k) == b"list"]
    messages = [json.loads(m) for k in lists for m in broker.lrange(k, 0, -1)]
    return [(m["headers"]["task"], m["headers"]["id"]) for m in messages]


def test_with_every_pool_slot_busy_beat_still_recovers_and_publishes(
    stack_env: tuple[dict[str, str], RedisServer], tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Both workers of a private broker and database run a long task on their only slot. A
    task nobody published is published by the outbox sweep, and when one worker is killed
    its attempt is recovered as ``lost`` within the heartbeat timeout plus a sweep, while the
    other slot is still held; no sweep ever travels as a Celery job."""
    env, server = stack_env
    broker = redis.Redis.from_url(server.url())
    hold = 25  # seconds per slot: past every deadline below, so the fleet stays full
    settings = Settings.from_env(env)
    client = make_app(settings).test_client()
    quiet = cut_off_client(settings)
    beat = start_beat(env, tmp_path)
    try:
        with victim_workers(env, tmp_path) as (capability, workers):
            spec = {"task_type": "effect", "capabilities": [capability]}
            held = submit(
                client, [{**spec, "key": f"hold{i}", "payload": {"seconds": hold}} for i in (0, 1)]
            )
            ids = [t["id"] for t in held["tasks"]]
            holders = [running_on(client, task_id, workers) for task_id in ids]
            assert set(holders) == set(workers)  # every slot of every worker is busy

            late = submit(quiet, [{**spec, "key": "late"}])  # committed, never published
            late_id = late["tasks"][0]["id"]
            wait_for(
                lambda: ("omoi.run_task", f"{late_id}:1") in waiting(broker),
                timeout=REPUBLISH_AGE + SWEEP + SLACK,
                what="the outbox sweep to publish the unpublished task",
            )

            doomed, survivor = holders
            os.killpg(doomed.pid, signal.SIGKILL)
            killed_at = time.monotonic()

            def recovered() -> dict[str, Any] | None:
                task = client.get(f"/api/v1/tasks/{ids[0]}").get_json()
                first = task["attempts"][0]
                return task if first["outcome"] == "retry_scheduled" else None

            task = wait_for(recovered, timeout=60, what="the killed worker's attempt recovered")
            recovery = time.monotonic() - killed_at
            assert task["attempts"][0]["error"]["category"] == "lost"
            assert recovery < HEARTBEAT_TIMEOUT + SWEEP + SLACK, recovery
            other = client.get(f"/api/v1/tasks/{ids[1]}").get_json()
            assert other["status"] == "running"  # the survivor's slot was held all along
            queued = waiting(broker)
            assert {name for name, _ in queued} == {"omoi.run_task"}, queued
            report_recovery(recovery)

            assert wait_finished(client, held["id"], timeout=90)["status"] == "done"
            assert wait_finished(client, late["id"], timeout=60)["status"] == "done"
            task = client.get(f"/api/v1/tasks/{ids[0]}").get_json()
            assert [a["outcome"] for a in task["attempts"]] == ["retry_scheduled", "succeeded"]
            agent = client.get(f"/api/v1/agents/{task['agent_id']}").get_json()
            assert agent["pid"] == survivor.pid
            assert int(redis_client.get(EFFECT_KEY.format(ids[0]))) == 1
            logs = [w.output() for w in workers]
    finally:
        beat.stop()
    assert not [k for k in broker.scan_iter() if b"omoi.control" in k]
    assert not [log for log in logs if "omoi.sweep" in log or "Discarding revoked" in log]
    assert "sweep_failed" not in beat.output()
