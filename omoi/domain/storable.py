"""What PostgreSQL can store as JSON, one rule for the API's request guard and the worker's
results: no NUL characters or lone surrogates in any string (jsonb refuses both), no NaN or
infinity, nothing that is not JSON."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

TOO_DEEP = "<too deep>"


def bad_node(value: Any, max_depth: int) -> str | None:
    """Path of the first string holding NUL or a lone surrogate or of the first number that is
    not finite, ``TOO_DEEP`` when containers nest deeper than ``max_depth``, else None
    (iterative walk)."""
    stack: list[tuple[str, int, Any]] = [("$", 0, value)]
    while stack:
        path, depth, node = stack.pop()
        if isinstance(node, dict | list) and depth >= max_depth:
            return TOO_DEEP
        if isinstance(node, dict):
            for k, v in node.items():
                stack.append((f"{path}.{k}", depth + 1, v))
                stack.append((f"{path}.<key>", depth + 1, k))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", depth + 1, v) for i, v in enumerate(node))
        elif not _storable_scalar(node):
            return path
    return None


def _storable_scalar(node: Any) -> bool:
    if isinstance(node, str):
        return _storable_text(node)
    return not isinstance(node, float) or math.isfinite(node)


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
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
