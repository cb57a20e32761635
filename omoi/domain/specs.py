"""The rules a task spec's fields follow wherever the spec comes from. The API's schema states
them to clients with these limits; workflow files and splits, which do not pass through it,
are checked here, so a bad value is refused where it is written rather than failing the insert
of a phase's or a split's tasks later."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from omoi.domain.enums import Priority

KEY_LENGTH = 200
TASK_TYPE_LENGTH = 100
DESCRIPTION_LENGTH = 20_000
CAPABILITIES = 32  # per task
RESOURCE_LENGTH = 200
MAX_RETRIES = 100
FIRST_BACKOFF = 86_400.0  # seconds
LONGEST_WAIT = 7 * 86_400.0  # seconds: timeouts, a sync point's deadline, the backoff's cap
TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # a capability
KEY = re.compile(r"^[^#]+$")  # '#' marks a repeated phase's keys


def _text(limit: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and 1 <= len(v) <= limit


def _key(value: Any) -> bool:
    return _text(KEY_LENGTH)(value) and bool(KEY.match(value))


def _number(upper: float) -> Callable[[Any], bool]:
    """A positive number up to ``upper`` (a bool is not a number here)."""
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= upper


def _strings(each: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list | tuple) and all(each(x) for x in v)


def _sync(value: Any) -> bool:
    if not isinstance(value, Mapping) or set(value) - {"need", "timeout_seconds"}:
        return False
    need, timeout = value.get("need"), value.get("timeout_seconds")
    return (
        isinstance(need, int)
        and not isinstance(need, bool)
        and need >= 1
        and (timeout is None or _number(LONGEST_WAIT)(timeout))
    )


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "key": (_key, f"a string of 1 to {KEY_LENGTH} characters without '#'"),
    "task_type": (_text(TASK_TYPE_LENGTH), f"a string of 1 to {TASK_TYPE_LENGTH} characters"),
    "description": (
        lambda v: isinstance(v, str) and len(v) <= DESCRIPTION_LENGTH,
        f"a string of at most {DESCRIPTION_LENGTH} characters",
    ),
    "depends_on": (_strings(_key), "a list of task keys"),
    "capabilities": (
        lambda v: (
            _strings(lambda x: isinstance(x, str) and bool(TOKEN.match(x)))(v)
            and len(v) <= CAPABILITIES
            and len({x.lower() for x in v}) == len(v)
        ),
        f"a list of at most {CAPABILITIES} distinct short tokens",
    ),
    "payload": (lambda v: isinstance(v, Mapping), "a mapping"),
    "priority": (
        lambda v: v is None or v in {p.value for p in Priority},
        f"one of {', '.join(p.value for p in Priority)}",
    ),
    "max_retries": (
        lambda v: (
            v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_RETRIES)
        ),
        f"an integer from 0 to {MAX_RETRIES}",
    ),
    "retry_backoff": (
        lambda v: v is None or _number(FIRST_BACKOFF)(v),
        f"seconds, more than 0 and at most {FIRST_BACKOFF:.0f}",
    ),
    "retry_backoff_max": (
        lambda v: v is None or _number(LONGEST_WAIT)(v),
        f"seconds, more than 0 and at most {LONGEST_WAIT:.0f}",
    ),
    "timeout_seconds": (
        lambda v: v is None or _number(LONGEST_WAIT)(v),
        f"seconds, more than 0 and at most {LONGEST_WAIT:.0f}",
    ),
    "resources": (_strings(_text(RESOURCE_LENGTH)), "a list of resource names"),
    "sync": (
        lambda v: v is None or _sync(v),
        "{need: at least 1, timeout_seconds: optional seconds}",
    ),
    "external": (lambda v: isinstance(v, bool), "true or false"),
}


def problems(spec: Any, known: Collection[str]) -> list[str]:
    """What is wrong with a task spec, one line per problem: not a mapping, ``key`` or
    ``task_type`` missing, a field outside ``known``, a field's value against its rule."""
    if not isinstance(spec, Mapping):
        return [f"a task spec must be a mapping (got {spec!r})"]
    found = [f"{name} is required" for name in ("key", "task_type") if name not in spec]
    unknown = sorted(set(spec) - set(known))
    if unknown:
        found.append(f"unknown fields {unknown}")
    found += [
        f"{name} must be {expected} (got {spec[name]!r})"
        for name, (valid, expected) in RULES.items()
        if name in spec and not valid(spec[name])
    ]
    return found
