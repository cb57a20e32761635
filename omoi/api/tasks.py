"""Task endpoints."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any

from flask import Response
from flask.views import MethodView

from omoi.api.events import TICK, Frames, resumed, sse_response
from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.common import CancelIn
from omoi.api.schemas.tasks import (
    CompleteIn,
    FailIn,
    LogLineOut,
    LogPage,
    LogQuery,
    LogsIn,
    LogsStored,
    LogStreamQuery,
    TaskDetail,
    TaskPage,
    TaskQuery,
)
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import TaskError
from omoi.services import cancellation, external_agents, logs
from omoi.services.read import logs as task_logs
from omoi.services.read import queries

blp = Blueprint(
    "tasks",
    __name__,
    url_prefix="/api/v1/tasks",
    description="Inspect tasks: edges, attempts, errors, timeline",
)


@blp.route("")
class Tasks(MethodView):
    @blp.arguments(TaskQuery, location="query")
    @blp.response(200, TaskPage)
    def get(self, args: dict[str, Any]) -> Any:
        """List tasks in creation order; filter by ticket and status."""
        page = queries.list_tasks(runtime().db, **args)
        return {"items": page.items, "next_cursor": page.next_cursor}


@blp.route("/<uuid:task_id>")
class TaskById(MethodView):
    @blp.response(200, TaskDetail)
    @blp.alt_response(404, description="No such task")
    def get(self, task_id: uuid.UUID) -> Any:
        """One task with ``depends_on``, the derived ``blocks`` and its event timeline."""
        return task_detail(task_id)


def task_detail(task_id: uuid.UUID) -> dict[str, Any]:
    """The task; ``waiting_for`` says why a queued one waits: the lock it needs, or the
    worker (one that enabled its exec type)."""
    rt = runtime()
    task, blocks, timeline = queries.get_task(rt.db, task_id)
    return {
        **{c.key: getattr(task, c.key) for c in task.__table__.columns},
        "waiting_for": task.waiting_for or queries.worker_wait(rt.db, task, rt.settings.exec_types),
        "depends_on": task.depends_on,
        "blocks": blocks,
        "attempts": queries.attempts_of(timeline),
        "timeline": timeline,
    }


@blp.route("/<uuid:task_id>/cancel")
class CancelTask(MethodView):
    @blp.arguments(CancelIn)
    @blp.response(200, TaskDetail)
    @blp.alt_response(404, description="No such task")
    @blp.alt_response(409, description="The task already ended")
    def post(self, body: dict[str, Any], task_id: uuid.UUID) -> Any:
        """Cancel a task and its dependents; a running attempt is revoked (terminated)."""
        rt = runtime()
        cancellation.cancel_task(rt.uow, task_id, body["reason"])
        return task_detail(task_id)


@blp.route("/<uuid:task_id>/retry")
class RetryTask(MethodView):
    @blp.response(200, TaskDetail)
    @blp.alt_response(404, description="No such task")
    @blp.alt_response(409, description="The task is not failed")
    def post(self, task_id: uuid.UUID) -> Any:
        """Re-run a failed task with a fresh retry budget; its cancelled dependents wait again."""
        rt = runtime()
        cancellation.retry_task(rt.uow, task_id)
        return task_detail(task_id)


@blp.route("/<uuid:task_id>/complete")
class CompleteTask(MethodView):
    @blp.arguments(CompleteIn)
    @blp.response(200, TaskDetail)
    @blp.alt_response(404, description="No such task")
    @blp.alt_response(409, description="The lease no longer holds the task")
    def post(self, body: dict[str, Any], task_id: uuid.UUID) -> Any:
        """An external agent reports success with the lease token it claimed the task with."""
        rt = runtime()
        external_agents.complete(rt.uow, task_id, body["lease_token"], body["result"])
        return task_detail(task_id)


@blp.route("/<uuid:task_id>/fail")
class FailTask(MethodView):
    @blp.arguments(FailIn)
    @blp.response(200, TaskDetail)
    @blp.alt_response(404, description="No such task")
    @blp.alt_response(409, description="The lease no longer holds the task")
    def post(self, body: dict[str, Any], task_id: uuid.UUID) -> Any:
        """An external agent reports failure; transient and timeout errors are retried."""
        rt = runtime()
        reported = body["error"]
        error = TaskError(
            ErrorCategory(reported["category"]), reported["type"], reported["message"]
        )
        external_agents.fail(rt.uow, rt.policy, task_id, body["lease_token"], error)
        return task_detail(task_id)


@blp.route("/<uuid:task_id>/logs")
class TaskLogs(MethodView):
    @blp.arguments(LogQuery, location="query")
    @blp.response(200, LogPage)
    @blp.alt_response(404, description="No such task, or no such attempt of it")
    def get(self, args: dict[str, Any], task_id: uuid.UUID) -> Any:
        """An attempt's log (default: the latest attempt), oldest line first, after line
        ``after``; pass ``next_after`` back as ``after`` for the next page."""
        return task_logs.page(runtime().db, task_id, **args)

    @blp.arguments(LogsIn)
    @blp.response(200, LogsStored)
    @blp.alt_response(403, description="The token's agent does not hold the task")
    @blp.alt_response(404, description="No such task")
    @blp.alt_response(409, description="The lease no longer holds the task; nothing written")
    @blp.alt_response(413, description="A body over 1 MiB")
    def post(self, body: dict[str, Any], task_id: uuid.UUID) -> Any:
        """An external agent adds lines to the log of the attempt its lease holds."""
        rt = runtime()
        done = logs.post(
            rt.db,
            rt.log_signal,
            task_id,
            body["lease_token"],
            body["lines"],
            body["stream"],
            rt.log_limits,
        )
        return {
            "task_id": task_id,
            "attempt": done.attempt,
            "stored": done.stored,
            "truncated": done.full(rt.log_limits.max_lines),
        }


@blp.route("/<uuid:task_id>/logs/stream")
class TaskLogStream(MethodView):
    @blp.arguments(LogStreamQuery, location="query")
    @blp.alt_response(404, description="No such task, or no such attempt of it")
    @blp.doc(
        responses={
            "200": {
                "description": "Server-Sent Events: each line as an event ``line`` whose id is "
                "its number (a reconnect with Last-Event-ID resumes after it), then one "
                "event ``end`` once the attempt ended",
                "content": {"text/event-stream": {}},
            },
            "429": {"description": "this token holds as many streams as it may"},
        }
    )
    def get(self, args: dict[str, Any], task_id: uuid.UUID) -> Response:
        """Follow an attempt's log (default: the latest) live, until the attempt ends."""
        return log_stream_response(task_id, args.get("attempt"), args["after"], args["timeout"])


def log_stream_response(
    task_id: uuid.UUID, attempt: int | None, after: int, timeout: float
) -> Response:
    """Server-Sent Events of an attempt's log after line ``after`` (a reconnect's
    ``Last-Event-ID`` wins) for ``timeout`` seconds or until the attempt ends, read from the
    process's watcher of task logs (``LogHub``). The API's stream and the board's."""
    rt = runtime()
    attempt = task_logs.check_attempt(rt.db, task_id, attempt)  # a 404 takes no stream slot
    start = resumed(after) or 0
    line_out = LogLineOut()

    def frames(keep_going: Callable[[], bool]) -> Frames:
        feed = rt.logs.follow(task_id, attempt, after=start, keep_going=keep_going, tick=TICK)
        with closing(feed):
            for batch in feed:
                text = "".join(
                    f"id: {row.seq}\nevent: line\ndata: {json.dumps(line_out.dump(row))}\n\n"
                    for row in batch.lines
                )
                if batch.ended:
                    end = {
                        "task_id": str(task_id),
                        "attempt": attempt,
                        "status": batch.status,
                        "truncated": batch.truncated,
                    }
                    text += f"event: end\ndata: {json.dumps(end)}\n\n"
                yield text or None

    return sse_response(frames, timeout)
