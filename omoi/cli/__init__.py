"""The ``omoi`` command: the click group and its commands, registered from ``launcher``
(process start-up), ``client`` (the API's commands, on ``omoi.client``) and ``admin``
(database and tokens)."""

from __future__ import annotations

import click

from omoi.cli import admin, client, launcher
from omoi.cli.common import Group


@click.group(cls=Group)
@click.version_option(package_name="omoi", message="omoi %(version)s")
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
    client.tickets,
    client.tasks,
    client.show,
    client.cancel,
    client.retry,
    client.approve,
    client.agents,
    client.events,
    admin.db,
    admin.token,
):
    main.add_command(command)
