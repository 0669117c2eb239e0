"""Alembic environment for the history database.

The app runs migrations through `studio.history.db.migrate`, which hands over a live connection in
`config.attributes["connection"]` (same engine, same pragmas, already inside a transaction). A
developer running the `alembic` command by hand gets an engine built from `sqlalchemy.url`.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from studio.history.tables import Base, managed_by_orm, orm_objects

config = context.config
target_metadata = Base.metadata

# Only the command line configures logging; inside the app the app's own logging stays as it is.
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite can't ALTER most things; batch mode recreates the table instead (PostgreSQL ALTERs in place).
        render_as_batch=True,
        compare_type=True,
        include_name=managed_by_orm,
        include_object=orm_objects(connection.dialect.name),
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (`alembic upgrade head --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on the connection given by the app, or on one made from the ini file."""
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
