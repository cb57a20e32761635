"""``GET /metrics``: Prometheus text with omoi's state and the API's latency."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


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
