"""Celery canvases compiled into one ticket of the ``dag`` workflow, with Celery's semantics.

A Celery ``Signature`` is a dict (``task``, ``args``, ``kwargs``, ``options``,
``subtask_type``, ``immutable``; a chain's and a group's members under ``kwargs['tasks']``, a
chord's under ``kwargs['header']`` and ``kwargs['body']``), so this module reads canvases in
that dict form and imports nothing of Celery. Each task of the canvas becomes a task of type
``celery:<task name>`` whose ``depends_on`` are the tasks whose results it receives (or, for an
immutable ``.si()``, merely follows), and whose payload says how the worker builds its
arguments: ``{"args", "kwargs", "input"}``. ``input`` is ``None`` (no parent argument) or a
*shape*: a task key (the parent argument is that task's result) or a list of shapes (a list
of results, nested as Celery nests them: a group's result is the list of its members', nested
groups flattened, a chain's is its last element's, a chord's its body's). The worker prepends
the value the shape describes to ``args``, as Celery prepends the parent's result.

The lead's sketch had ``{"keys", "list"}``; a shape also says how a group member that is
itself a chain ending in a group nests its results, which ``keys`` + a flag cannot.

Keys are positional and readable: ``0.add``, ``1.0.mul`` (member 0 of element 1). A chord
counts as its header's members followed by its body. When the canvas ends in several tasks (a
group), one collector task (``COLLECT``) gathers their results, so the ticket has one last
task whose result is the canvas's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omoi.domain import specs

TASK_TYPE_PREFIX = "celery:"
COLLECT = "omoi.canvas.collect"
RESULT_KEY = "result"
CELERY_BACKOFF_MAX = 600.0  # Celery's retry_backoff_max default, when retry_backoff is on

MAX_DEPTH = 28  # an argument's nesting, within the API's OMOI_MAX_JSON_DEPTH (32) for the body

Shape = str | list[Any]  # a task key, or a list of shapes


class CanvasError(ValueError):
    """A canvas omoi cannot run as given: says where (``chain[1].args[0]``) and why."""


def task_type(name: str) -> str:
    """The omoi task type of Celery task ``name``."""
    return f"{TASK_TYPE_PREFIX}{name}"


def keys_of(shape: Shape | None) -> list[str]:
    """Every task key a shape names, in order."""
    if shape is None:
        return []
    if isinstance(shape, str):
        return [shape]
    return [key for item in shape for key in keys_of(item)]


def build_input(shape: Shape, results: Mapping[str, Any]) -> Any:
    """The parent argument a shape describes, from ``{key: result}`` of the dependencies."""
    if isinstance(shape, str):
        return results[shape]
    return [build_input(item, results) for item in shape]


def call_arguments(payload: Mapping[str, Any], results: Mapping[str, Any]) -> tuple[list, dict]:
    """``(args, kwargs)`` of a compiled task: its own, the parent's value first if it takes one."""
    args = list(payload.get("args", []))
    shape = payload.get("input")
    if shape is not None:
        args.insert(0, build_input(shape, results))
    return args, dict(payload.get("kwargs", {}))


@dataclass(frozen=True)
class CompiledCanvas:
    """A ticket body for ``POST /api/v1/tickets`` and the key of the task whose result is the
    canvas's."""

    ticket: dict[str, Any]
    result_key: str


def _json_problem(value: Any, depth: int = 0) -> tuple[str, str] | None:
    """Where (a suffix such as ``[2]['x']``) and why ``value`` is not storable JSON, or None."""
    if depth > MAX_DEPTH:
        return "", "nests too deeply"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", f"is {value!r}, which JSON cannot hold")
    if isinstance(value, str):
        bad = _bad_text(value)
        return ("", bad) if bad else None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _json_problem(item, depth + 1)
            if found:
                return f"[{i}]{found[0]}", found[1]
        return None
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"[{k!r}]", f"has a key of type {type(k).__name__}; JSON keys are strings"
            if bad := _bad_text(k):
                return f"[{k!r}]", f"has a key that {bad}"
            found = _json_problem(item, depth + 1)
            if found:
                return f"[{k!r}]{found[0]}", found[1]
        return None
    return "", f"is a {type(value).__name__}, not JSON"


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character, which PostgreSQL cannot store"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return "holds a lone surrogate, which PostgreSQL cannot store"
    return None


def _check_json(path: str, value: Any) -> Any:
    found = _json_problem(value)
    if found:
        raise CanvasError(f"{path}{found[0]} {found[1]}: arguments must be JSON")
    return value


def _seconds(value: Any, path: str, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CanvasError(f"{path}: {option}={value!r} is not a number of seconds above 0")
    return float(value)


def task_options(options: Mapping[str, Any], task: Any, path: str) -> dict[str, Any]:
    """omoi's fields for a signature's Celery options, each read from the signature's
    ``options`` first, then from its task object (``task``, None when unknown):

    - ``soft_time_limit`` (else ``time_limit``) → ``timeout_seconds``, omoi's soft limit; the
      hard limit follows ``OMOI_TIME_LIMIT_GRACE`` later;
    - ``max_retries`` → ``max_retries`` (Celery's ``None``, forever, → omoi's most, 100);
    - ``retry_backoff`` (``True`` is Celery's factor 1) → ``retry_backoff`` seconds, and then
      ``retry_backoff_max`` (Celery's default 600) → ``retry_backoff_max``.
    """

    def read(name: str, default: Any = None) -> Any:
        if name in options:
            return options[name]
        return getattr(task, name, default) if task is not None else default

    fields_: dict[str, Any] = {}
    soft = _seconds(read("soft_time_limit"), path, "soft_time_limit")
    hard = _seconds(read("time_limit"), path, "time_limit")
    limit = soft or hard
    if limit is not None:
        fields_["timeout_seconds"] = min(limit, specs.LONGEST_WAIT)
    if "max_retries" in options or (task is not None and hasattr(task, "max_retries")):
        retries = read("max_retries")
        if retries is None:
            retries = specs.MAX_RETRIES
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise CanvasError(f"{path}: max_retries={retries!r} is not a count")
        fields_["max_retries"] = min(retries, specs.MAX_RETRIES)
    backoff = read("retry_backoff", False)
    if backoff:
        base = 1.0 if backoff is True else _seconds(backoff, path, "retry_backoff")
        fields_["retry_backoff"] = min(float(base or 1.0), specs.FIRST_BACKOFF)
        cap = _seconds(read("retry_backoff_max", CELERY_BACKOFF_MAX), path, "retry_backoff_max")
        fields_["retry_backoff_max"] = min(cap or CELERY_BACKOFF_MAX, specs.LONGEST_WAIT)
    return fields_


def _type_of(sig: Any) -> Any:
    """The task object a signature resolves to in its app (Celery's ``sig.type``), or None:
    a signature in plain dict form, or of a task its app does not know, has none."""
    try:
        return getattr(sig, "type", None)
    except Exception:  # NotRegistered, an unconfigured app: the options alone, then
        return None


UNSUPPORTED_OPTIONS = ("link", "link_error", "chord")


@dataclass
class _Compiler:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    type_of: Callable[[Any], Any] = _type_of

    def node(self, sig: Any, path: str, prefix: str, parent: Shape | None) -> Shape:
        """Compile one signature whose parent value is ``parent``; returns its result's shape."""
        if not isinstance(sig, Mapping) or "task" not in sig:
            raise CanvasError(f"{path} is a {type(sig).__name__}, not a Celery signature")
        kind = sig.get("subtask_type")
        if kind is None:
            return self.task(sig, path, prefix, parent)
        kwargs = sig.get("kwargs") or {}
        if sig.get("args") or (kind == "chord" and kwargs.get("kwargs")):
            raise CanvasError(
                f"{path}: partial arguments on a {kind} are not supported; give them to its tasks"
            )
        if kind == "chain":
            return self.chain(self.members(kwargs.get("tasks"), path, kind), path, prefix, parent)
        if kind == "group":
            return self.group(self.members(kwargs.get("tasks"), path, kind), path, prefix, parent)
        if kind == "chord":
            header = kwargs.get("header")
            if isinstance(header, Mapping):  # a group signature rather than its members
                header = (header.get("kwargs") or {}).get("tasks")
            members = self.members(header, f"{path}.header", "chord header")
            head = self.group(members, f"{path}.header", prefix, parent)
            body = kwargs.get("body")
            if body is None:
                raise CanvasError(f"{path}: a chord needs a body")
            return self.node(body, f"{path}.body", f"{prefix}{len(members)}.", head)
        raise CanvasError(f"{path}: canvas type {kind!r} is not supported")

    @staticmethod
    def members(tasks: Any, path: str, kind: str) -> list[Any]:
        if isinstance(tasks, Mapping) or not isinstance(tasks, Iterable):
            raise CanvasError(f"{path}: a {kind} needs a list of signatures")
        members = list(tasks)
        if not members:
            raise CanvasError(f"{path}: an empty {kind} has no task to run")
        return members

    def chain(self, members: list[Any], path: str, prefix: str, parent: Shape | None) -> Shape:
        shape = parent
        for i, member in enumerate(members):
            member = _unroll(member)
            shape = self.node(member, f"{path}[{i}]", f"{prefix}{i}.", shape)
        assert shape is not None
        return shape

    def group(
        self,
        members: list[Any],
        path: str,
        prefix: str,
        parent: Shape | None,
    ) -> list[Any]:
        shape: list[Any] = []
        for i, member in enumerate(members):
            sub = self.node(member, f"{path}[{i}]", f"{prefix}{i}.", parent)
            if isinstance(member, Mapping) and member.get("subtask_type") == "group":
                shape.extend(sub)  # Celery flattens a group in a group
            else:
                shape.append(sub)
        return shape

    def task(self, sig: Mapping[str, Any], path: str, prefix: str, parent: Shape | None) -> Shape:
        name = sig["task"]
        if not isinstance(name, str) or not name:
            raise CanvasError(f"{path}: the signature names no task")
        if name.startswith("celery."):
            raise CanvasError(f"{path}: Celery's built-in task {name!r} cannot run on omoi")
        kind = task_type(name)
        if len(kind) > specs.TASK_TYPE_LENGTH:
            raise CanvasError(
                f"{path}: task name {name!r} is longer than omoi's task types allow "
                f"({specs.TASK_TYPE_LENGTH - len(TASK_TYPE_PREFIX)} characters)"
            )
        options = sig.get("options") or {}
        for option in UNSUPPORTED_OPTIONS:
            if options.get(option):
                raise CanvasError(f"{path}: option {option!r} is not supported; use the canvas")
        args = _check_json(f"{path}.args", list(sig.get("args") or ()))
        kwargs = _check_json(f"{path}.kwargs", dict(sig.get("kwargs") or {}))
        key = f"{prefix}{name.rsplit('.', 1)[-1]}"[: specs.KEY_LENGTH]
        if key in self.seen or "#" in key:
            raise CanvasError(f"{path}: cannot give task {name!r} a key of its own")
        self.seen.add(key)
        immutable = bool(sig.get("immutable"))
        self.tasks.append(
            {
                "key": key,
                "task_type": kind,
                "depends_on": keys_of(parent),
                "payload": {
                    "args": args,
                    "kwargs": kwargs,
                    "input": None if immutable or parent is None else parent,
                },
                **task_options(options, self.type_of(sig), path),
            }
        )
        return key


def _unroll(sig: Any) -> Any:
    """A group of one member is that member in a chain, as Celery's ``maybe_unroll_group``
    makes it: ``chain(group(a), b)`` hands ``b`` the result of ``a``, not a list."""
    if isinstance(sig, Mapping) and sig.get("subtask_type") == "group":
        tasks = (sig.get("kwargs") or {}).get("tasks")
        if isinstance(tasks, list | tuple) and len(tasks) == 1:
            return tasks[0]
    return sig


def _root_path(sig: Any) -> str:
    if isinstance(sig, Mapping):
        kind = sig.get("subtask_type")
        return str(kind) if kind else str(sig.get("task", "task"))
    return "canvas"


def compile_canvas(
    canvas: Any,
    title: str,
    *,
    capabilities: list[str] | None = None,
    type_of: Callable[[Any], Any] = _type_of,
    **ticket: Any,
) -> CompiledCanvas:
    """The ticket that runs ``canvas`` (a Celery signature, chain, group or chord, nested as
    deep as wanted) with Celery's semantics; ``capabilities`` route every task (and the
    collector), ``ticket`` adds ticket fields (``description``, ``priority``). Raises
    ``CanvasError`` naming the first argument or option it cannot carry."""
    compiler = _Compiler(type_of=type_of)
    shape = compiler.node(canvas, _root_path(canvas), "", None)
    if not isinstance(shape, str):  # several last tasks: one collector makes the result
        compiler.tasks.append(
            {
                "key": RESULT_KEY,
                "task_type": COLLECT,
                "depends_on": keys_of(shape),
                "payload": {"args": [], "kwargs": {}, "input": shape},
            }
        )
        shape = RESULT_KEY
    if capabilities:
        for spec in compiler.tasks:
            spec["capabilities"] = list(capabilities)
    body = {"title": title, "workflow": "dag", **ticket, "tasks": compiler.tasks}
    return CompiledCanvas(body, shape)
