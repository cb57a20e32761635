"""Checks on every request body before any view runs, whatever its framing (``Content-Length``
or ``Transfer-Encoding: chunked``): content type, JSON that parses without blowing the stack and
nests no deeper than ``OMOI_MAX_JSON_DEPTH``, strings PostgreSQL can store and finite numbers
(``NaN``, ``Infinity`` and ``1e999`` parse in Python but are not JSON). Each failure is a 4xx,
nothing written."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request

from omoi.api.csrf import FORMS
from omoi.api.errors import error_response
from omoi.api.runtime import runtime
from omoi.domain.storable import TOO_DEEP, bad_node

BODY_METHODS = {"POST", "PUT", "PATCH"}
# routes whose bodies are smaller than OMOI_MAX_BODY_BYTES allows (413 above)
BODY_LIMITS = {"tasks.TaskLogs": 1024 * 1024}


def invalid_value(path: str) -> Response:
    return error_response(
        422,
        "invalid_value",
        "strings may not contain NUL characters or lone surrogates, and numbers must be finite",
        {"path": path},
    )


def check_query() -> Response | None:
    """Query parameters and the idempotency key reach SQL too."""
    strings = {
        **{f"query.{k}": v for k, v in request.args.items(multi=True)},
        "header.Idempotency-Key": request.headers.get("Idempotency-Key", ""),
    }
    path = bad_node(strings, 1)
    return invalid_value(path.replace("$.", "", 1)) if path else None


class WholeBodies:
    """WSGI middleware that gives a body without Content-Length (``Transfer-Encoding:
    chunked``) one: read whole, up to the size limit, before anything looks at it. Otherwise
    werkzeug silently cuts such a body at ``MAX_CONTENT_LENGTH``, and every check that keys on
    the length skips it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if (
            environ.get("CONTENT_LENGTH")
            or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            error = {
                "code": "request_entity_too_large",
                "message": f"request body over {self.max_bytes} bytes",
                "details": {"max": self.max_bytes},
            }
            payload = json.dumps({"error": error}).encode()
            start_response(
                "413 Request Entity Too Large",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    ("Connection", "close"),
                ],
            )
            return [payload]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        del environ["HTTP_TRANSFER_ENCODING"]  # werkzeug ignores the length beside it
        return self.app(environ, start_response)


def check_body() -> Response | None:
    if request.method not in BODY_METHODS or not request.content_length:
        return None
    if request.endpoint in FORMS:
        return None  # the board's sign-in and sign-out forms: small and urlencoded
    limit = BODY_LIMITS.get(request.endpoint or "")
    if limit is not None and request.content_length > limit:
        return error_response(
            413,
            "request_entity_too_large",
            f"request body over {limit} bytes",
            {"max": limit},
        )
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
    return invalid_value(path) if path is not None else None


def register(app: Flask) -> None:
    app.wsgi_app = WholeBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]
    app.before_request(check_query)
    app.before_request(check_body)
