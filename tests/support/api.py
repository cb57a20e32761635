"""Helpers for driving the API in tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from omoi.api import create_app
from omoi.config import Settings
from omoi.domain.auth import new_secret
from omoi.persistence import Database
from omoi.services.dispatcher import Dispatcher
from tests.support.procs import free_port, wait_for

ADMIN_TOKEN = new_secret()  # OMOI_BOOTSTRAP_TOKEN of every process of the test session


def bearer(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def authorize(app: Flask, token: str = ADMIN_TOKEN) -> Flask:
    """Make the app's test clients send ``token`` unless a request names another."""

    class Client(FlaskClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    app.test_client_class = Client
    return app


def make_app(
    settings: Settings, *, db: Database | None = None, dispatcher: Dispatcher | None = None
) -> Flask:
    """The API app whose test clients act as the session's admin."""
    return authorize(create_app(settings, db=db, dispatcher=dispatcher))


def cut_off_client(settings: Settings) -> FlaskClient:
    """A client of an API whose broker is unreachable: what it accepts is committed but never
    published, and waits in the outbox for beat's sweep."""
    unreachable = dataclasses.replace(settings, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    return make_app(unreachable).test_client()


def submit(client: Any, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/tickets", json={"title": "test", "tasks": tasks, **extra})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def wait_finished(client: Any, ticket_id: str, timeout: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        ticket = client.get(f"/api/v1/tickets/{ticket_id}").get_json()
        return ticket if ticket["status"] != "active" else None

    return wait_for(finished, timeout, interval=0.1, what=f"ticket {ticket_id} to finish")


def tasks_by_key(client: Any, ticket_id: str) -> dict[str, dict[str, Any]]:
    items = client.get(f"/api/v1/tasks?ticket_id={ticket_id}&limit=1000").get_json()["items"]
    return {t["key"]: t for t in items}
