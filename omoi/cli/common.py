"""What the CLI's commands share: their settings, where the local token is saved, tables."""

from __future__ import annotations

from typing import Any

import click

from omoi.config import Settings

TOKEN_FILE = "token"


def load_settings() -> Settings:
    """Settings from the environment (a malformed value ends the command naming it), with the
    data directory created."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed OMOI_* number: say which, without a traceback
        raise click.ClickException(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned table."""
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
