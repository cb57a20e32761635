"""The workflows this deployment knows."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.workflows import WorkflowList

blp = Blueprint(
    "workflows",
    __name__,
    url_prefix="/api/v1/workflows",
    description="Workflows: phases and their transitions",
)


@blp.route("")
class Workflows(MethodView):
    @blp.response(200, WorkflowList)
    def get(self) -> Any:
        return {
            "items": [
                {
                    "name": w.name,
                    "description": w.description,
                    "phases": w.names,
                    "transitions": {k: list(v) for k, v in w.transitions.items()},
                }
                for w in runtime().uow.workflows.all()
            ]
        }
