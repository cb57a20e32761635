"""Split and merge: a running task fans its work out into subtasks and a merge continuation
that receives their results; whatever depended on the task now waits for the merge.

The merge is an ordinary task whose ``unmet_dependencies`` counter is the subtasks' count, so
the same statement that stores a subtask's result releases it: there is no Celery chord (it
would need a result backend in every worker, and its counter would be a second, weaker copy of
the one PostgreSQL already keeps). A lost message is re-published by the outbox sweep; a
duplicate one finds the merge already claimed and does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select, update

from omoi.domain.auth import BUILTIN_EXEC_TYPES
from omoi.domain.enums import TaskStatus
from omoi.domain.events import EventType
from omoi.domain.specs import field_problem
from omoi.domain.specs import problems as spec_problems
from omoi.persistence.statements import (
    ROOT_JOB,
    TICKET_TITLE,
    dependents,
    lease_held,
    record,
    task_event,
    tasks,
)
from omoi.persistence.types import utcnow
from omoi.services.dispatcher import Dispatch
from omoi.services.errors import Conflict, Invalid
from omoi.services.phases import Defaults, NewTask, Origin, check_graph, instantiate
from omoi.services.unit_of_work import Transaction, UnitOfWork

MERGE_TYPE = "omoi.merge"
STRATEGIES = ("all", "first", "majority")

# What a subtask spec may set: a task's fields but its phase, which is the splitting task's.
SUBTASK_FIELDS = set(NewTask.__dataclass_fields__) - {"phase"}


def merge_spec(merge: str | dict[str, Any], keys: Sequence[str]) -> NewTask:
    """``"all"``, ``"first"``, ``"majority"`` (the built-in merge handler), or
    ``{"task_type": "my-merge", ...}`` for a custom merge handler."""
    options = {"strategy": merge} if isinstance(merge, str) else dict(merge)
    task_type = options.pop("task_type", MERGE_TYPE)
    bad = field_problem("task_type", task_type)
    if bad:
        raise Invalid(f"merge: {bad}")
    if task_type == MERGE_TYPE and options.get("strategy", "all") not in STRATEGIES:
        raise Invalid(
            f"unknown merge strategy {options.get('strategy')!r}", {"strategies": list(STRATEGIES)}
        )
    return NewTask(
        key="merge",
        task_type=task_type,
        depends_on=list(keys),
        payload={**options, "order": list(keys)},
    )


def split(
    uow: UnitOfWork,
    task_id: uuid.UUID,
    lease: uuid.UUID,
    subtasks: Sequence[dict[str, Any]],
    merge: str | dict[str, Any],
    exec_types: Collection[str] = BUILTIN_EXEC_TYPES,
) -> list[Dispatch]:
    """Add the subtasks and their merge to the running task's phase; re-point the task's
    dependents at the merge; the ready subtasks are published after the commit, and returned.
    Only a task of an exec type (whose submitter held ``exec``) may split into exec-type
    tasks: another handler's subtasks may come from its submitter's payload."""
    if not subtasks:
        raise Invalid("split needs at least one subtask")
    for n, raw in enumerate(subtasks):  # a handler's specs pass through no API schema
        bad = spec_problems(raw, SUBTASK_FIELDS)
        if bad:
            raise Invalid(f"subtasks[{n}]: {'; '.join(bad)}", {"subtask": n})
    specs = [NewTask(**{"depends_on": [], **s}) for s in subtasks]
    specs.append(merge_spec(merge, [s.key for s in specs]))

    def work(tx: Transaction) -> list[Dispatch]:
        now, conn = utcnow(), tx.conn
        parent = conn.execute(
            select(
                tasks.c.ticket_id,
                tasks.c.phase,
                tasks.c.key,
                tasks.c.priority,
                tasks.c.max_retries,
                tasks.c.task_type,
                tasks.c.celery_id,
                TICKET_TITLE,
                ROOT_JOB,
            )
            .where(tasks.c.id == task_id, lease_held(lease))
            .with_for_update()
        ).one_or_none()
        if parent is None:
            raise Conflict(
                f"task {task_id} is no longer held by this attempt", {"task_id": str(task_id)}
            )
        check_graph(specs, parent.phase)
        runs_code = sorted({s.task_type for s in specs if s.task_type in exec_types})
        if runs_code and parent.task_type not in exec_types:
            raise Invalid(
                f"a {parent.task_type!r} task may not split into {runs_code[0]!r} tasks: "
                "only a task of an exec type may (mark its type in OMOI_EXEC_TASK_TYPES)",
                {"task_types": runs_code},
            )
        specs[-1].payload["order"] = [f"{parent.key}/{k}" for k in specs[-1].depends_on]
        rows, ready = instantiate(
            conn,
            parent.ticket_id,
            parent.phase,
            specs,
            Defaults(parent.priority, parent.max_retries),
            now,
            Origin(parent.ticket_title, parent.root_job, parent.celery_id),
            split_of=parent.key,
        )
        merge_id = str(rows[-1]["id"])
        waiting = dependents(
            conn,
            parent.ticket_id,
            [task_id],
            TaskStatus.PENDING,
            tasks.c.id,
            tasks.c.dependencies,
        )
        for dep in waiting:
            wanted = [merge_id if d == str(task_id) else d for d in dep.dependencies["depends_on"]]
            conn.execute(
                update(tasks)
                .where(tasks.c.id == dep.id)
                .values(dependencies={"depends_on": wanted})
            )
        record(
            conn,
            [
                task_event(
                    EventType.TASK_SPLIT,
                    task_id,
                    parent.ticket_id,
                    {
                        "subtasks": len(rows) - 1,
                        "merge_task": merge_id,
                        "redirected": len(waiting),
                    },
                    now,
                )
            ],
        )
        tx.ready += ready
        return ready

    return uow.run(work)
