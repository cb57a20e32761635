"""The ``omoi`` command: the click group and its commands, from ``launcher`` (process
start-up), ``client`` (the API's commands, on ``omoi.client``) and ``admin`` (database and
tokens). A command's module is imported when that command runs (click's lazy subcommands):
the API's commands never load the database layer, so they start in a fraction of a second."""

from __future__ import annotations

import importlib

import click

from omoi.cli.common import Group

MODULES = {
    "launcher": ("api", "worker", "beat", "up", "demo"),
    "client": (
        "submit",
        "status",
        "tickets",
        "tasks",
        "show",
        "cancel",
        "retry",
        "approve",
        "agents",
        "events",
        "logs",
    ),
    "admin": ("db", "token"),
}
COMMANDS = {name: module for module, names in MODULES.items() for name in names}


class LazyGroup(Group):
    """Each command imported from its module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"omoi.cli.{COMMANDS[cmd_name]}")
        command: click.Command = getattr(module, cmd_name)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="omoi", message="omoi %(version)s")
def main() -> None:
    """omoi: tickets, phases, task DAGs and agent fleets on Celery."""
