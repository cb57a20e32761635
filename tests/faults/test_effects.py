"""At-least-once execution, exactly-once recorded results: a worker killed between a handler's
side effect and the commit of its result runs the handler again, and ``ctx.idempotency_key``
(the same for every attempt of the task) is what keeps the effect single."""

from __future__ import annotations

import os
import signal
from typing import Any

import redis

from tests.faults.test_lost_workers import run_on_a_victim
from tests.support.api import wait_finished
from tests.support.handlers import EFFECT_KEY, RUNS_KEY
from tests.support.procs import Proc, wait_for


def test_a_kill_between_effect_and_commit_runs_the_handler_again_and_the_key_holds(
    client: Any, beat: Proc, victims: tuple[str, list[Proc]], redis_client: redis.Redis
) -> None:
    ticket, task_id, doomed = run_on_a_victim(client, victims, 60, task_type="charge-once")
    wait_for(
        lambda: redis_client.get(EFFECT_KEY.format(task_id)) == b"1",
        timeout=30,
        what="the effect before the commit",
    )
    os.killpg(doomed.pid, signal.SIGKILL)
    assert wait_finished(client, ticket["id"], timeout=60)["status"] == "done"
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert task["result"] == {"runs": 2}  # executed at least once: here, twice
    assert int(redis_client.get(RUNS_KEY.format(task_id))) == 2
    assert int(redis_client.get(EFFECT_KEY.format(task_id))) == 1  # the effect, once
    assert [a["outcome"] for a in task["attempts"]] == ["retry_scheduled", "succeeded"]
