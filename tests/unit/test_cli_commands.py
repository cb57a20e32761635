"""The ``omoi`` group loads each command from the module its table names."""

import subprocess
import sys

import click

from omoi.cli import COMMANDS, main
from tests.support.procs import ROOT


def test_every_listed_command_loads_under_its_own_name() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(ctx, "nope") is None


def test_an_api_command_leaves_the_database_layer_unloaded() -> None:
    """What makes ``omoi tickets`` start quickly: only ``client``'s command module loads."""
    probe = (
        "import sys; from omoi.cli import main; import click;"
        "main.get_command(click.Context(main), 'tickets');"
        "print(sorted(m for m in ('sqlalchemy', 'celery', 'omoi.cli.admin') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
