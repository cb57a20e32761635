"""A worker that dies or freezes mid-task: its attempt is recovered as ``lost`` within the
heartbeat timeout plus a sweep, finishes on another worker, and a late result is refused."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import redis

from tests.support.api import submit, wait_finished
from tests.support.handlers import EFFECT_KEY
from tests.support.procs import Proc, report_recovery, wait_for

HEARTBEAT_TIMEOUT, SWEEP = 4, 1  # tests/conftest.py TEST_ENV


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
