"""Database and token administration, straight on the database: ``omoi db upgrade`` and
``omoi token create/list/revoke``."""

from __future__ import annotations

import click

from omoi.cli.common import load_settings, table
from omoi.composition import Role, Root
from omoi.config import Settings
from omoi.domain.auth import Scope
from omoi.persistence import Database
from omoi.services import tokens
from omoi.services.errors import NotFound


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations."""
    from omoi.persistence.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


def local_token(settings: Settings) -> str:
    """The local user's admin token: the saved one while it is valid, else a new one saved
    (mode 0600) where the CLI looks for it."""
    db = Root(settings, Role.CLI).db
    try:
        saved = settings.token_file
        if saved.exists() and tokens.Authenticator(db)(saved.read_text().strip()):
            return saved.read_text().strip()
        _, secret = tokens.create(db, "local", [Scope.ADMIN])
    finally:
        db.dispose()
    saved.touch(mode=0o600)
    saved.write_text(secret + "\n")
    return secret


@click.group()
def token() -> None:
    """API tokens (stored hashed; the secret is shown once)."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([s.value for s in Scope]),
    help="read, submit, agent, exec or admin; repeat for several (exec: submit tasks "
    "whose type runs code, with submit).",
)
def token_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a token and print its secret (the only time it is shown)."""
    row, secret = tokens.create(_database(), name, list(scopes))
    click.echo(f"token {row['id']} ({name}: {', '.join(row['scopes'])})", err=True)
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """Tokens with their scopes, bound agent and revocation time (never the secrets)."""
    table(
        tokens.list_tokens(_database()),
        ["id", "name", "scopes", "agent_id", "created_at", "revoked_at"],
    )


@token.command("revoke")
@click.argument("ref")
def token_revoke(ref: str) -> None:
    """Revoke a token by id or name (every API process refuses it within 2 s)."""
    try:
        count = tokens.revoke(_database(), ref)
    except NotFound as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {count} token(s)")


def _database() -> Database:
    return Root(load_settings(), Role.CLI).db
