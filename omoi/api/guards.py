"""Checks on every request body before any view runs: content type, JSON that parses without
blowing the stack and nests no deeper than ``OMOI_MAX_JSON_DEPTH``, and strings PostgreSQL can
store. Each failure is a 4xx, nothing written."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from omoi.api.errors import error_response
from omoi.api.runtime import runtime

BODY_METHODS = {"POST", "PUT", "PATCH"}


TOO_DEEP = "<too deep>"


def bad_node(value: Any, max_depth: int) -> str | None:
    """Path of the first string holding NUL or a lone surrogate, ``TOO_DEEP`` when containers
    nest deeper than ``max_depth``, else None (iterative walk)."""
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
        elif isinstance(node, str):
            if "\x00" in node:
                return path
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return path
    return None


def invalid_string(path: str) -> Response:
    return error_response(
        422,
        "invalid_string",
        "strings may not contain NUL characters or lone surrogates",
        {"path": path},
    )


def check_query() -> Response | None:
    """Query parameters and the idempotency key reach SQL too."""
    strings = {
        **{f"query.{k}": v for k, v in request.args.items(multi=True)},
        "header.Idempotency-Key": request.headers.get("Idempotency-Key", ""),
    }
    path = bad_node(strings, 1)
    return invalid_string(path.replace("$.", "", 1)) if path else None


def check_body() -> Response | None:
    if request.method not in BODY_METHODS or not request.content_length:
        return None
    if not request.is_json:
        return error_response(
            415,
            "unsupported_media_type",
            "request body must be application/json",
            {"content_type": request.content_type},
        )
    try:
        body = request.get_json(silent=False)
    except RecursionError:
        return error_response(400, "bad_request", "JSON nested too deeply")
    max_depth = runtime().settings.max_json_depth
    path = bad_node(body, max_depth)
    if path == TOO_DEEP:
        return error_response(
            400, "bad_request", f"JSON nested deeper than {max_depth} levels", {"max": max_depth}
        )
    return invalid_string(path) if path is not None else None


def register(app: Flask) -> None:
    app.before_request(check_query)
    app.before_request(check_body)
