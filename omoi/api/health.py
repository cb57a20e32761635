"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from omoi.api.runtime import runtime
from omoi.services.read import queries

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> Any:
    """Alive; ``instance`` (``OMOI_INSTANCE_ID``) tells ``omoi up`` the server is its own."""
    return jsonify({"status": "ok", "instance": runtime().settings.instance_id})


@blp.get("/readyz")
def readyz() -> Any:
    """Ready when both the database and the broker answer; 503 names what is down."""
    rt = runtime()
    checks: dict[str, str] = {}
    for name, probe in (("database", lambda: queries.ping(rt.db)), ("broker", rt.broker_ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    resp = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    resp.status_code = 200 if ready else 503
    if not ready:
        resp.headers["Retry-After"] = "5"
    return resp
