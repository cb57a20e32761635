"""What the CLI's commands share: their settings, exit codes, one-line errors, tables."""

from __future__ import annotations

from typing import Any

import click

from omoi.client import ApiError, ApiUnreachable
from omoi.config import Settings

# Exit codes (the README's Usage lists them): 0 done, 1 a local problem (an input file, a
# setting), 2 a usage error (click's own), then these two.
EXIT_NOT_DONE = 3  # the ticket ended blocked (a task failed, a gate held) or cancelled
EXIT_API = 4  # the API refused the request (4xx), failed (5xx) or could not be reached

WIDEST_CELL = 60  # a longer error or result is cut in tables (``omoi show`` has it all)


class Failure(click.ClickException):
    """A one-line ``Error: …`` on stderr and ``exit_code``, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def api_failure(exc: ApiError | ApiUnreachable) -> Failure:
    """The API's error as one line: its status, code and ``error.message`` (with the fields
    a rejected request got wrong), or the URL that did not answer and why."""
    if isinstance(exc, ApiUnreachable):
        return Failure(
            f"cannot reach the API at {exc.url} ({exc.reason}); is it running? "
            "OMOI_API_URL or OMOI_API_PORT say where it is",
            EXIT_API,
        )
    fields = "; ".join(f"{where}: {what}" for where, what in _flat(exc.details))
    detail = f" ({fields})" if fields and exc.code == "unprocessable_entity" else ""
    return Failure(f"{exc.status} {exc.code}: {exc.message}{detail}", EXIT_API)


def _flat(details: Any, where: str = "") -> list[tuple[str, str]]:
    """Field messages (webargs nests them by location and field) as ``(tasks.0.key, msg)``."""
    if isinstance(details, dict):
        found: list[tuple[str, str]] = []
        for key, value in details.items():
            inner = key if not where else f"{where}.{key}"
            found += _flat(value, "" if not where and key in ("json", "query") else inner)
        return found
    if isinstance(details, list) and all(isinstance(d, str) for d in details):
        return [(where or "request", " ".join(details))]
    return [(where or "request", str(details))]


class Group(click.Group):
    """The ``omoi`` group: an API error from any command ends it in one line (``EXIT_API``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ApiError, ApiUnreachable) as exc:
            raise api_failure(exc) from None


def load_settings() -> Settings:
    """Settings from the environment (a malformed value ends the command naming it), with the
    data directory created."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a malformed OMOI_* number: say which, without a traceback
        raise click.ClickException(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def clip(text: str, width: int = WIDEST_CELL) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned table."""
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
