"""Checks on every request body before any view runs: content type, JSON that parses without
blowing the stack and nests no deeper than ``OMOI_MAX_JSON_DEPTH``, and strings PostgreSQL can
store. Each failure is a 4xx, nothing written."""

from __future__ import annotations

from flask import Flask, Response, request

from omoi.api.csrf import FORMS
from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.domain.storable import TOO_DEEP, bad_node

BODY_METHODS = {"POST", "PUT", "PATCH"}


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
    if request.endpoint in FORMS:
        return None  # the board's sign-in and sign-out forms: small and urlencoded
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
