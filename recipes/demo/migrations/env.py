"""The demo's Alembic environment: the migrations that build ``recipes.demo.models``.

Where the migrations run depends on what ``config.attributes["connection"]`` holds:

- a ``Connection``: a test hands in the sync side of its ``AsyncConnection`` (through
  ``AsyncConnection.run_sync``). The migrations run inside that connection's transaction and
  commit nothing of their own; the caller commits or rolls back. This is Alembic's cookbook
  recipe "Programmatic API use (connection sharing) With Asyncio".
- an ``AsyncEngine``: pytest-alembic hands in its ``alembic_engine`` this way, from sync tests.
- nothing: the command line. An async engine of its own on ``-x url=...``, else on the ini's
  ``sqlalchemy.url``, run with ``asyncio.run()``.

``asyncio.run()`` is only called when nothing was handed in: called from a test, where an
event loop is already running, it raises "asyncio.run() cannot be called from a running event
loop".
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from recipes.demo.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """``-x url=...`` on the command line, else the ini's ``sqlalchemy.url``."""
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url", ""
    )


def configure(**kwargs: object) -> None:
    # render_as_batch: SQLite cannot ALTER a column or a constraint, so autogenerate writes
    # "with op.batch_alter_table(...)" blocks, which recreate the table on SQLite and are
    # plain ALTERs elsewhere. It changes what autogenerate writes, not what a script does.
    context.configure(target_metadata=target_metadata, render_as_batch=True, **kwargs)


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    configure(connection=connection)
    # Inside a transaction the caller began, this opens none of its own (and commits nothing).
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):  # handed in by a test: its transaction, its loop
        do_run_migrations(connectable)
    elif isinstance(connectable, AsyncEngine):  # handed in by pytest-alembic, from sync code
        asyncio.run(run_async_migrations(connectable))
    elif connectable is None:  # the command line
        # A test's logging belongs to pytest: only the command line reads the ini's loggers.
        if config.config_file_name is not None:
            fileConfig(config.config_file_name, disable_existing_loggers=False)
        engine = create_async_engine(database_url(), poolclass=pool.NullPool)

        async def run() -> None:
            try:
                await run_async_migrations(engine)
            finally:
                await engine.dispose()

        asyncio.run(run())
    else:
        raise TypeError(
            'config.attributes["connection"] must be a sync Connection (from '
            f"AsyncConnection.run_sync) or an AsyncEngine, not {type(connectable).__name__}"
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
