"""Handlers for the tests, loaded by worker subprocesses through ``OMOI_HANDLERS``.

``effect`` performs an external side effect (a Redis counter per task), so tests can count how
many times a task's body really ran, independently of what omoi recorded.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from omoi.domain.errors import PermanentError, TransientError
from omoi.worker.handlers import TaskContext, handler

_client: redis.Redis | None = None


def effects() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["OMOI_TEST_EFFECTS_URL"])
    return _client


EFFECT_KEY = "omoi-test:effects:{}"
log = logging.getLogger(__name__)


@handler("effect")
def effect(ctx: TaskContext) -> dict[str, Any]:
    time.sleep(float(ctx.payload.get("seconds", 0)))
    runs = effects().incr(EFFECT_KEY.format(ctx.task_id))
    return {"key": ctx.key, "runs": runs, "inputs": sorted(ctx.dependency_results)}


RUNS_KEY = "omoi-test:runs:{}"


@handler("charge-once")
def charge_once(ctx: TaskContext) -> dict[str, Any]:
    """Its side effect first, then ``payload.seconds`` of work on the first run before the
    result commits: a kill in that window runs it again, and the effect, keyed by
    ``ctx.idempotency_key``, still happens once."""
    runs = effects().incr(RUNS_KEY.format(ctx.task_id))
    if effects().set(f"omoi-test:charged:{ctx.idempotency_key}", 1, nx=True):
        effects().incr(EFFECT_KEY.format(ctx.task_id))
    if runs == 1:
        time.sleep(float(ctx.payload.get("seconds", 0)))
    return {"runs": runs}


@handler("explode")
def explode(ctx: TaskContext) -> None:
    raise PermanentError(ctx.payload.get("message", "exploded on purpose"))


@handler("flaky")
def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fails transiently on its first ``payload.fail_times`` attempts."""
    if ctx.attempt <= int(ctx.payload.get("fail_times", 1)):
        raise TransientError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


CLEANUP_KEY = "omoi-test:cleanup:{}"


@handler("soft-aware")
def soft_aware(ctx: TaskContext) -> None:
    """Sleeps past its soft limit, cleans up when told, and gives up."""
    try:
        time.sleep(float(ctx.payload.get("seconds", 30)))
    except SoftTimeLimitExceeded:
        effects().set(CLEANUP_KEY.format(ctx.task_id), "done")
        raise


@handler("stubborn")
def stubborn(ctx: TaskContext) -> None:
    """Ignores the soft limit: only the hard limit can stop it."""
    deadline = time.monotonic() + float(ctx.payload.get("seconds", 30))
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            effects().set(CLEANUP_KEY.format(ctx.task_id), "ignored")


@handler("context-echo")
def context_echo(ctx: TaskContext) -> dict[str, Any]:
    """Reports the summary of earlier phases it was handed."""
    decision = ctx.payload.get("decision")
    return {
        "summary": f"{ctx.key} done",
        "seen": ctx.ticket_context.get("summary", ""),
        "decisions": [decision] if decision else [],
    }


@handler("audit-report")
def audit_report(ctx: TaskContext) -> dict[str, Any]:
    """Emits the report the ``review`` workflow's audit gate wants."""
    ctx.emit_artifact("audit", {"text": f"# Audit\n\n## Findings\n\nnone, says {ctx.key}"})
    return {"summary": "audit clean"}


@handler("messenger")
def messenger(ctx: TaskContext) -> dict[str, Any]:
    """Sends ``payload.text`` to ``payload.to`` as the worker's agent; reports its own inbox."""
    sent = ctx.send_message({"text": ctx.payload["text"]}, to_agent=uuid.UUID(ctx.payload["to"]))
    return {"from": str(ctx.agent_id), "thread": str(sent.thread_id), "inbox": len(ctx.inbox())}


@handler("fan-out")
def fan_out(ctx: TaskContext) -> dict[str, Any]:
    """Splits into one ``vote`` subtask per value in ``payload.values``, each with the fields
    of ``payload.extra`` too."""
    subtasks = [
        {
            "key": f"v{i}",
            "task_type": "vote",
            "payload": {"value": v},
            **ctx.payload.get("extra", {}),
        }
        for i, v in enumerate(ctx.payload["values"])
    ]
    ids = ctx.split(subtasks, merge=ctx.payload.get("merge", "all"))
    return {"split": len(ids)}


@handler("vote")
def vote(ctx: TaskContext) -> Any:
    return ctx.payload["value"]


UNSTORABLE: dict[str, Any] = {
    "nan": {"x": float("nan")},
    "inf": [float("-inf")],
    "nul": {"text": "a\x00b"},
    "object": {"o": object()},
}


@handler("unstorable")
def unstorable(ctx: TaskContext) -> Any:
    """Returns what PostgreSQL cannot store, of the kind ``payload.kind`` names."""
    return UNSTORABLE[ctx.payload["kind"]]


@handler("chatty")
def chatty(ctx: TaskContext) -> dict[str, Any]:
    """Writes each of ``payload.lines`` to its log through ``ctx.log``, then a numbered record
    through ``logging``; Celery's loggers say something too (not the attempt's). With
    ``payload.fail_first`` its first attempt then fails transiently."""
    for n, line in enumerate(ctx.payload.get("lines", [])):
        ctx.log(f"{line} on attempt {ctx.attempt}")
        log.info("record %d on attempt %d", n, ctx.attempt)
    logging.getLogger("celery.worker.fake").warning("the worker's own line")
    if ctx.payload.get("fail_first") and ctx.attempt == 1:
        raise TransientError("the first attempt fails")
    return {"attempt": ctx.attempt}
