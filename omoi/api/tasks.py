"""Task endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from omoi.api.runtime import runtime
from omoi.api.schemas.common import CancelIn
from omoi.api.schemas.tasks import CompleteIn, FailIn, TaskDetail, TaskPage, TaskQuery
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import TaskError
from omoi.services import cancellation, external_agents
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
