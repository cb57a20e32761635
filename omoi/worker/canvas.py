"""A Celery user's own tasks as omoi handlers: ``omoi worker --celery-app package.module:app``
(or ``OMOI_CELERY_APP``) imports the app and registers each of its tasks (Celery's built-in
``celery.*`` ones aside) as the handler of task type ``celery:<task name>``, which the
canvases ``Client.submit_canvas`` compiles are made of (``omoi.domain.canvas``).

The task's function runs inside omoi's attempt, in the pool process, so omoi's time limits,
cancellation, leases, retries and log capture apply. It runs with a request of its own
(``self.request`` of a bound task: ``id`` the omoi task's id, ``retries`` the attempt number
less one, ``root_id`` the ticket's), marked eager, so that ``self.retry()`` raises Celery's
``Retry`` rather than sending a message to the app's broker: the app's broker and result
backend are never used by omoi. Exceptions keep Celery's meaning: ``Retry`` (``self.retry()``,
``autoretry_for``, whose wrapper calls it) is transient, retried by omoi with the task's
backoff; ``Reject``, ``Ignore``, ``MaxRetriesExceededError``, a ``throws`` match and every
other exception the task raises are final (permanent), as a Celery task's exception is unless
it asks to be retried. What omoi does to the attempt keeps omoi's meaning: a time limit is a
``timeout`` and a dead worker ``lost``, both retried up to ``max_retries``; so are omoi's own
``TransientError`` and ``PermanentError`` if the task raises them."""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery, Task
from celery.exceptions import Retry

from omoi.domain.canvas import call_arguments, task_type
from omoi.domain.enums import ErrorCategory
from omoi.domain.errors import PermanentError, TransientError, mark_category
from omoi.services.context import Handler, TaskContext

TIME_LIMIT_NAMES = {"SoftTimeLimitExceeded", "TimeLimitExceeded"}


class CeleryAppError(ValueError):
    """``OMOI_CELERY_APP`` names nothing importable, or not a Celery app."""


def load_app(spec: str) -> Celery:
    """The Celery app ``package.module:attribute`` names (``package.module`` alone: its ``app``
    or ``celery``), imported without changing omoi's own app: the user's app may become
    Celery's current app, which omoi's worker never relies on (its tasks are bound to its
    own app, and its worker sets that app current as it starts)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CeleryAppError(
            f"OMOI_CELERY_APP={spec!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    for name in (attribute,) if attribute else ("app", "celery"):
        app = getattr(module, name, None)
        if isinstance(app, Celery):
            return app
    raise CeleryAppError(
        f"OMOI_CELERY_APP={spec!r}: {module_name} has no Celery app "
        f"{'named ' + repr(attribute) if attribute else 'named app or celery'}"
    )


def handlers_of(app: Celery) -> dict[str, Handler]:
    """``{celery:<name>: handler}`` for every task of ``app`` but Celery's own."""
    return {
        task_type(name): _handler(task)
        for name, task in app.tasks.items()
        if not name.startswith("celery.")
    }


def _celery_category(exc: Exception) -> ErrorCategory | None:
    """How Celery would treat ``exc``: a retry it asked for is transient, any other exception
    of the task's final; None (omoi's classification) for omoi's own errors and time limits."""
    if isinstance(exc, Retry):
        return ErrorCategory.TRANSIENT
    if isinstance(exc, TransientError | PermanentError):
        return None
    if {cls.__name__ for cls in type(exc).__mro__} & TIME_LIMIT_NAMES:
        return None
    return ErrorCategory.PERMANENT


def _handler(task: Task) -> Handler:
    def run(ctx: TaskContext) -> Any:
        needs_parent = ctx.payload.get("input") is not None
        try:
            args, kwargs = call_arguments(
                ctx.payload, ctx.dependency_results if needs_parent else {}
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise PermanentError(f"not a compiled canvas task's payload: {exc!r}") from exc
        task.push_request(
            id=str(ctx.task_id),
            root_id=str(ctx.ticket_id),
            task=task.name,
            args=args,
            kwargs=kwargs,
            retries=ctx.attempt - 1,
            is_eager=True,  # self.retry() raises Retry and sends nothing
            called_directly=False,  # ... rather than re-raising the task's exception
        )
        try:
            return task.run(*args, **kwargs)
        except Exception as exc:
            category = _celery_category(exc)
            if category is not None:
                mark_category(exc, category)
            raise
        finally:
            task.pop_request()

    run.__doc__ = f"Celery task {task.name}, run in omoi's attempt."
    return run
