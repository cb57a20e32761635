"""The ``omoi`` command: the click group and its commands, registered from ``launcher``
(process start-up), ``client`` (the HTTP client) and ``admin`` (database and tokens)."""

from __future__ import annotations

import click

from omoi.cli import admin, client, launcher


@click.group()
def main() -> None:
    """omoi: tickets, phases, task DAGs and agent fleets on Celery."""


for command in (
    launcher.api,
    launcher.worker,
    launcher.beat,
    launcher.up,
    launcher.demo,
    client.submit,
    client.status,
    client.tasks,
    client.agents,
    client.events,
    client.logs,
    admin.db,
    admin.token,
):
    main.add_command(command)
