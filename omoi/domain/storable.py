"""What PostgreSQL can store as JSON, one rule for the API's request guard and the worker's
results: no NUL characters or lone surrogates in any string (jsonb refuses both), no NaN or
infinity, nothing that is not JSON."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

TOO_DEEP = "<too deep>"


Trail = tuple[Any, Any] | None  # (the parent's trail, a key or an index): a path unformatted


def bad_node(value: Any, max_depth: int) -> str | None:
    """Path of the first string holding NUL or a lone surrogate or of the first number that is
    not finite, ``TOO_DEEP`` when containers nest deeper than ``max_depth``, else None.
    A 15 MiB body of small values holds millions of nodes, so the common case is settled in
    C: the nesting from the containers' types alone, then one encoding of the whole value,
    which fails on a lone surrogate or a NaN and shows a NUL as ``\\u0000``; only a value
    that fails is walked node by node, to name the first bad one."""
    if _too_deep(value, max_depth):
        return TOO_DEEP
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        if "\\u0000" not in text:  # (a literal backslash-u0000 only costs the walk)
            text.encode("utf-8")
            return None
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        pass
    return _first_bad(value)


SCALARS = frozenset({str, int, float, bool, type(None)})


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether containers nest deeper than ``max_depth``: level by level, each container's
    values' types checked at once in C (``map(type, …)``), so a list of a million numbers
    costs no loop in Python."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        if depth >= max_depth:
            return True
        deeper: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            if not SCALARS.issuperset(map(type, children)):
                deeper.extend(c for c in children if isinstance(c, dict | list))
        level, depth = deeper, depth + 1
    return False


def _first_bad(value: Any) -> str | None:
    """The walk, building a path only for the node it reports."""
    if not isinstance(value, dict | list):
        return None if _storable_scalar(value) else "$"
    stack: list[tuple[Any, Trail]] = [(value, None)]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if not _storable_scalar(key):
                    return _path(trail) + ".<key>"
                if isinstance(child, dict | list):
                    stack.append((child, (trail, key)))
                elif not _storable_scalar(child):
                    return _path((trail, key))
        else:
            for index, child in enumerate(node):
                if isinstance(child, dict | list):
                    stack.append((child, (trail, index)))
                elif not _storable_scalar(child):
                    return _path((trail, index))
    return None


def _path(trail: Trail) -> str:
    """``$.a[1].b``: a list's index in brackets, a mapping's key after a dot."""
    steps = []
    while trail is not None:
        trail, step = trail
        steps.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "$" + "".join(reversed(steps))


def _storable_scalar(node: Any) -> bool:
    if isinstance(node, str):
        return _storable_text(node)
    return not isinstance(node, float) or math.isfinite(node)


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():  # no surrogate is ASCII
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored as a JSON column, or None when it can."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    path = bad_node(value, sys.maxsize)
    if path is not None:
        return f"the string at {path} holds a NUL character or a lone surrogate"
    return None


def storable_text(text: str) -> str:
    """``text`` with what PostgreSQL refuses escaped, for error messages and tracebacks that
    quote the very value that could not be stored."""
    if _storable_text(text):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
