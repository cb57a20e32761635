"""Handler registry and the built-in handlers. Users register their own with ``@handler``
in a module named by ``OMOI_HANDLERS``."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from omoi.domain.canvas import COLLECT, build_input
from omoi.domain.errors import PermanentError
from omoi.domain.merge import merge_results
from omoi.services.context import Handler, TaskContext
from omoi.worker import shell as shell_process
from omoi.worker.fetch import fetch

__all__ = ["Handler", "TaskContext", "handler", "registry"]

OUTPUT_LIMIT = 64 * 1024


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, task_type: str) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            self._handlers[task_type] = fn
            return fn

        return decorate

    def get(self, task_type: str) -> Handler | None:
        return self._handlers.get(task_type)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def load(self, modules: Iterable[str]) -> None:
        """Import user modules so their ``@handler`` decorators run."""
        for module in modules:
            importlib.import_module(module)

    def load_celery_app(self, spec: str) -> None:
        """Register the tasks of the Celery app ``spec`` names as ``celery:<name>``
        (``omoi.worker.canvas``); Celery is imported only by workers that ask for it."""
        from omoi.worker.canvas import handlers_of, load_app

        self._handlers.update(handlers_of(load_app(spec)))

    def resolver(
        self, exec_types: Collection[str], enabled: Collection[str]
    ) -> Callable[[str], Handler | None]:
        """The worker's lookup: an exec type it has not enabled resolves to a refusal, so a
        message that reaches it anyway (another queue layout, a hand-published message) fails
        at once and never runs."""

        def resolve(task_type: str) -> Handler | None:
            if task_type in exec_types and task_type not in enabled:
                return _refusal(task_type)
            return self.get(task_type)

        return resolve


def _refusal(task_type: str) -> Handler:
    def refuse(ctx: TaskContext) -> Any:
        raise PermanentError(
            f"task type {task_type!r} runs code and this worker has not enabled it "
            f"(omoi worker --enable {task_type})"
        )

    return refuse


registry = Registry()
handler = registry.register


def _text(raw: bytes) -> str:
    """Bytes to storable text: PostgreSQL text cannot hold NUL."""
    return raw[-OUTPUT_LIMIT:].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@handler("noop")
def noop(ctx: TaskContext) -> Any:
    """Does nothing; returns ``payload.result`` if given (handy for tests and benchmarks)."""
    return ctx.payload.get("result", {"ok": True})


@handler("sleep")
def sleep(ctx: TaskContext) -> dict[str, float]:
    """Sleeps ``payload.seconds``, checking for cancellation every half second."""
    seconds = float(ctx.payload.get("seconds", 1))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        if ctx.should_cancel():
            raise PermanentError("cancelled while sleeping")
    return {"slept": seconds}


@handler("shell")
def shell(ctx: TaskContext) -> dict[str, Any]:
    """Runs ``payload.command`` (a string for the shell, or an argv list) within the task's
    time limit, in a session of its own with a scrubbed environment; whatever it started is
    killed when it ends, times out or is cancelled (``omoi/worker/shell.py``). Its output goes
    to the attempt's log line by line as it is written (streams ``stdout``, ``stderr``). A
    non-zero exit code fails the task, with the output kept in the error."""
    command = ctx.payload.get("command")
    if not isinstance(command, str | list) or not command:
        raise PermanentError("shell needs payload.command: a string or a list of arguments")
    code, stdout, stderr = shell_process.run(
        command,
        cwd=ctx.payload.get("cwd"),
        timeout=ctx.timeout_seconds,
        cancelled=ctx.should_cancel,
        on_line=lambda stream, line: ctx.log(line, stream),
    )
    result = {"exit_code": code, "stdout": _text(stdout), "stderr": _text(stderr)}
    if code != 0:
        raise PermanentError(f"command exited with {code}: {result['stderr'][-500:]}")
    return result


@handler("http")
def http(ctx: TaskContext) -> dict[str, Any]:
    """Calls ``payload.url`` (``method``, ``body``, ``headers``) through the guarded client
    (``omoi.worker.fetch``): internal addresses refused unless allowed, redirects checked,
    the body capped; 5xx transient, 4xx permanent."""
    url = ctx.payload.get("url")
    method = ctx.payload.get("method", "GET")
    body = ctx.payload.get("body")
    headers = ctx.payload.get("headers", {})
    if not isinstance(url, str) or not isinstance(method, str):
        raise PermanentError("http needs payload.url and payload.method as strings")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise PermanentError("http needs payload.headers as an object of strings")
    response = fetch(
        url,
        method=method.upper(),
        body=body.encode() if isinstance(body, str) else None,
        headers=headers,
        timeout=ctx.timeout_seconds or 30,
    )
    return {"status": response.status, "body": _text(response.body)}


@handler("omoi.merge")
def merge(ctx: TaskContext) -> Any:
    """The merge of a split: ``all`` (results in subtask order), ``first`` (the earliest
    finished), ``majority`` (the value most subtasks returned; fails without a majority)."""
    try:
        return merge_results(
            ctx.payload.get("strategy", "all"),
            ctx.payload["order"],
            ctx.dependency_results,
            ctx.dependency_finished,
        )
    except ValueError as exc:
        raise PermanentError(str(exc)) from exc


@handler(COLLECT)
def collect(ctx: TaskContext) -> Any:
    """The last task of a canvas that ends in several tasks (a group): their results, nested
    as the canvas nests them (``omoi.domain.canvas``)."""
    return build_input(ctx.payload["input"], ctx.dependency_results)
