"""``GET /metrics`` in Prometheus' text format, and the API's own latency histogram."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import structlog
from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from omoi.api.runtime import runtime
from omoi.services.read import metrics

blp = Blueprint("metrics", __name__)
LATENCY = Histogram(
    "omoi_api_request_seconds",
    "API request latency",
    ["method", "endpoint", "status"],
    registry=None,
)


class RecordCollector:
    """Gauges read from PostgreSQL at scrape time."""

    def collect(self) -> Iterator[Metric]:
        rt = runtime()
        snap = metrics.snapshot(rt.db, rt.settings.heartbeat_timeout)
        tickets = GaugeMetricFamily(
            "omoi_tickets", "Tickets by phase and status", labels=["phase", "status"]
        )
        for (phase, status), n in snap.tickets.items():
            tickets.add_metric([phase, status], n)
        yield tickets
        yield _by("omoi_tasks", "Tasks by status", "status", snap.tasks)
        yield _by(
            "omoi_task_errors",
            "Tasks whose last error is of this category (timeout, lost, …)",
            "category",
            snap.errors,
        )
        yield _by("omoi_agents", "Agents by status", "status", snap.agents)
        for name, doc, value in (
            (
                "omoi_oldest_queued_seconds",
                "Age of the oldest queued task",
                snap.oldest_queued_seconds,
            ),
            (
                "omoi_oldest_unpublished_seconds",
                "Age of the oldest queued task not yet published (the outbox's lag)",
                snap.oldest_unpublished_seconds,
            ),
            ("omoi_task_retries", "Retries scheduled, summed over tasks", snap.retries),
            ("omoi_lock_waits", "Tasks waiting for a resource lock", snap.lock_waits),
            ("omoi_agents_overdue", "Live agents past the heartbeat timeout", snap.overdue_agents),
            ("omoi_gate_failures", "Failed gate judgements", snap.gate_failures),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def _by(name: str, doc: str, label: str, values: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, n in values.items():
        family.add_metric([key], n)
    return family


REGISTRY = CollectorRegistry()
REGISTRY.register(LATENCY)
REGISTRY.register(RecordCollector())  # type: ignore[arg-type]


@blp.get("/metrics")
def scrape() -> Response:
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)


def register(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        """Time the request, and tag its log lines with a request id (echoed back)."""
        g.omoi_started = time.perf_counter()
        g.omoi_request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.omoi_request_id, path=request.path)

    @app.after_request
    def _observe(response: Any) -> Any:
        started = g.pop("omoi_started", None)
        if started is not None and request.endpoint != "metrics.scrape":
            LATENCY.labels(
                request.method,
                request.url_rule.rule if request.url_rule else "?",
                str(response.status_code),
            ).observe(time.perf_counter() - started)
        if "omoi_request_id" in g:
            response.headers["X-Request-ID"] = g.omoi_request_id
        return response
