"""Alembic environment: the URL comes from omoi's settings (or the caller's config attribute)."""

from alembic import context
from sqlalchemy import Connection

from omoi.config import Settings
from omoi.persistence import Base, Database
from omoi.persistence.migrate import compared

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=compared(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    database = Database(config.attributes.get("url") or Settings.from_env().database_url)
    with database.engine.connect() as conn:
        run(conn)
        conn.commit()
    database.dispose()
