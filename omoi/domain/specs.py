"""The rules a task spec's fields follow wherever the spec comes from. The API's schema states
them to clients with these limits; workflow files and splits, which do not pass through it,
are checked here, so a bad value is refused where it is written rather than failing the insert
of a phase's or a split's tasks later. Their values come typed (parsed YAML, Python), so these
rules take no strings for numbers or booleans, where the API's JSON schema coerces some."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from omoi.domain.enums import Priority
from omoi.domain.routing import normalize_capabilities

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

Check = Callable[[Any], bool]


def _optional(check: Check) -> Check:
    """``check``, or None (the field's default)."""
    return lambda v: v is None or check(v)


def _int(low: int, high: float) -> Check:
    """An integer (not a bool) from ``low`` to ``high``."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _seconds(upper: float) -> Check:
    """A number of seconds (not a bool), more than 0 and at most ``upper``."""
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= upper


def _text(limit: int) -> Check:
    """A string of 1 to ``limit`` characters."""
    return lambda v: isinstance(v, str) and 1 <= len(v) <= limit


_key_text = _text(KEY_LENGTH)


def _key(value: Any) -> bool:
    return _key_text(value) and bool(KEY.match(value))


def _each(check: Check) -> Check:
    """A list (or tuple) whose every item passes ``check``."""
    return lambda v: isinstance(v, list | tuple) and all(check(x) for x in v)


def _capabilities(value: Any) -> bool:
    """Short tokens, at most ``CAPABILITIES``, distinct as the API compares them."""
    tokens = _each(lambda x: isinstance(x, str) and bool(TOKEN.fullmatch(x)))
    return (
        tokens(value)
        and len(value) <= CAPABILITIES
        and len(normalize_capabilities(value)) == len(value)
    )


def _sync(value: Any) -> bool:
    """``{need, timeout_seconds?}``; how ``need`` compares with ``depends_on`` is checked in
    ``problems``, which sees both."""
    return (
        isinstance(value, Mapping)
        and not set(value) - {"need", "timeout_seconds"}
        and _int(1, float("inf"))(value.get("need"))
        and _optional(_seconds(LONGEST_WAIT))(value.get("timeout_seconds"))
    )


RULES: dict[str, tuple[Check, str]] = {
    "key": (_key, f"a string of 1 to {KEY_LENGTH} characters without '#'"),
    "task_type": (_text(TASK_TYPE_LENGTH), f"a string of 1 to {TASK_TYPE_LENGTH} characters"),
    "description": (
        lambda v: isinstance(v, str) and len(v) <= DESCRIPTION_LENGTH,
        f"a string of at most {DESCRIPTION_LENGTH} characters",
    ),
    "depends_on": (_each(_key), "a list of task keys"),
    "capabilities": (
        _capabilities,
        f"a list of at most {CAPABILITIES} distinct short tokens (letters, digits, _.:-)",
    ),
    "payload": (
        lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v),
        "a mapping with string keys",
    ),
    "priority": (
        _optional(lambda v: isinstance(v, str) and v in {p.value for p in Priority}),
        f"one of {', '.join(p.value for p in Priority)}",
    ),
    "max_retries": (_optional(_int(0, MAX_RETRIES)), f"an integer from 0 to {MAX_RETRIES}"),
    "retry_backoff": (
        _optional(_seconds(FIRST_BACKOFF)),
        f"seconds, more than 0 and at most {FIRST_BACKOFF:.0f}",
    ),
    "retry_backoff_max": (
        _optional(_seconds(LONGEST_WAIT)),
        f"seconds, more than 0 and at most {LONGEST_WAIT:.0f}",
    ),
    "timeout_seconds": (
        _optional(_seconds(LONGEST_WAIT)),
        f"seconds, more than 0 and at most {LONGEST_WAIT:.0f}",
    ),
    "resources": (_each(_text(RESOURCE_LENGTH)), "a list of resource names"),
    "sync": (
        _optional(_sync),
        "{need: an integer of at least 1, timeout_seconds: optional seconds}",
    ),
    "external": (lambda v: isinstance(v, bool), "true or false"),
}


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one field's value, or None."""
    valid, expected = RULES[name]
    return None if valid(value) else f"{name} must be {expected} (got {value!r})"


def problems(spec: Any, known: Collection[str]) -> list[str]:
    """What is wrong with a task spec, one line per problem: not a mapping, ``key`` or
    ``task_type`` missing, a field outside ``known``, a field's value against its rule, a sync
    point needing more dependencies than it has."""
    if not isinstance(spec, Mapping):
        return [f"a task spec must be a mapping (got {spec!r})"]
    found = [f"{name} is required" for name in ("key", "task_type") if name not in spec]
    unknown = sorted(str(name) for name in spec if name not in known)
    if unknown:
        found.append(f"unknown fields {unknown}")
    wrong = {
        name: problem
        for name in RULES
        if name in spec and (problem := field_problem(name, spec[name]))
    }
    found += wrong.values()
    sync, depends_on = spec.get("sync"), spec.get("depends_on") or []
    if sync and not {"sync", "depends_on"} & set(wrong):
        distinct = len(set(depends_on))
        if sync["need"] > distinct:
            found.append(f"sync.need must be at most the {distinct} tasks it depends on")
    return found
