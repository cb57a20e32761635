"""Resource locks: who holds what, who waits."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from omoi.api.parsing import Blueprint
from omoi.api.runtime import runtime
from omoi.api.schemas.locks import LockQuery, LocksOut
from omoi.services import locks

blp = Blueprint(
    "locks",
    __name__,
    url_prefix="/api/v1/locks",
    description="Resource locks held by running tasks and the tasks waiting",
)


@blp.route("")
class Locks(MethodView):
    @blp.arguments(LockQuery, location="query")
    @blp.response(200, LocksOut)
    def get(self, args: dict[str, Any]) -> Any:
        db = runtime().db
        return {
            "held": locks.held_locks(db, args.get("name")),
            "waiting": locks.waiting(db, args.get("name")),
        }
