"""Task endpoints."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from omoi.api.runtime import runtime
from omoi.api.schemas import TaskDetail, TaskPage, TaskQuery
from omoi.services import queries

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
        task, blocks, timeline = queries.get_task(runtime().db, task_id)
        return {
            **{c.key: getattr(task, c.key) for c in task.__table__.columns},
            "depends_on": task.depends_on,
            "blocks": blocks,
            "timeline": timeline,
        }
