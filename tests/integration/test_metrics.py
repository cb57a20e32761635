"""``GET /metrics``: Prometheus text with omoi's state and the API's latency."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import wait_finished
from tests.support.procs import wait_for


def scrape(client: Any) -> dict[str, list[Any]]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    return {f.name: f.samples for f in text_string_to_metric_families(resp.get_data(True))}


def test_metrics_report_state_and_latency(api_client: Any) -> None:
    api_client.post(
        "/api/v1/tickets",
        json={
            "title": "m",
            "tasks": [
                {"key": "a", "task_type": "noop"},
                {"key": "b", "task_type": "noop", "depends_on": ["a"]},
            ],
        },
    )
    families = scrape(api_client)
    tasks = {s.labels["status"]: s.value for s in families["omoi_tasks"]}
    assert tasks["queued"] >= 1 and tasks["pending"] >= 1
    tickets = {(s.labels["phase"], s.labels["status"]) for s in families["omoi_tickets"]}
    assert ("PHASE_RUN", "active") in tickets
    assert families["omoi_oldest_unpublished_seconds"][0].value >= 0  # nothing publishes here
    for name in (
        "omoi_task_retries",
        "omoi_lock_waits",
        "omoi_agents_overdue",
        "omoi_gate_failures",
    ):
        assert name in families
    latency = [
        s
        for s in families["omoi_api_request_seconds"]
        if s.name.endswith("_count")
        and s.labels["endpoint"] == "/api/v1/tickets"
        and s.labels["method"] == "POST"
    ]
    assert latency and latency[0].value >= 1


def test_requests_carry_a_request_id(api_client: Any) -> None:
    resp = api_client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert resp.headers["X-Request-ID"] == "abc123"
    generated = api_client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32


def test_worker_log_lines_carry_task_context(client: Any, worker: Any) -> None:
    ticket = client.post(
        "/api/v1/tickets",
        json={
            "title": "l",
            "tasks": [{"key": "x", "task_type": "explode", "payload": {"message": "logged"}}],
        },
    ).get_json()
    task_id = ticket["tasks"][0]["id"]

    def logged() -> dict[str, Any] | None:
        for line in worker.output().splitlines():
            if line.startswith("{") and task_id in line and '"attempt_failed"' in line:
                return json.loads(line)  # type: ignore[no-any-return]
        return None

    entry = wait_for(logged, what="the worker's log line")
    wait_finished(client, ticket["id"])  # let its last transaction end before teardown
    assert entry["ticket_id"] == ticket["id"] and entry["attempt"] == 1
    assert entry["agent_id"] and entry["message"] == "logged"
