"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from omoi.persistence.db import disconnected
from omoi.services.errors import Conflict, Forbidden, Invalid, NotFound, ServiceError

log = structlog.get_logger(__name__)

SERVICE_STATUS = {Forbidden: 403, NotFound: 404, Conflict: 409, Invalid: 422}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    resp.status_code = status
    return resp


def http_error(exc: HTTPException) -> Response:
    """Werkzeug/webargs errors; webargs puts field messages in ``exc.data['messages']``."""
    data = getattr(exc, "data", None) or {}
    details = data.get("messages") or {}
    code = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name or "error"
    if exc.code == 422 and details:
        message = "request validation failed"
    resp = error_response(exc.code or 500, code, message, details)
    for key, value in (data.get("headers") or {}).items():
        resp.headers[key] = value
    return resp


def database_error(exc: Exception) -> Response:
    """The database went away (a restart, a failover): 503 with ``Retry-After``, so clients
    retry; nothing was committed. Any other database error is a plain 500."""
    if not disconnected(exc):
        log.exception("database_error")
        return error_response(500, "internal_error", "the request failed on the server")
    resp = error_response(
        503, "unavailable", "the database is unavailable; retry shortly", {"retry_after": 5}
    )
    resp.headers["Retry-After"] = "5"
    return resp


def register(app: Flask) -> None:
    app.register_error_handler(DBAPIError, database_error)
    app.register_error_handler(psycopg.OperationalError, database_error)

    @app.errorhandler(ServiceError)
    def _service(exc: ServiceError) -> Response:
        return error_response(
            SERVICE_STATUS.get(type(exc), 400), exc.code, exc.message, exc.details
        )
