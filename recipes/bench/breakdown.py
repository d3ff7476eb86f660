"""Where a test's database time goes, on PostgreSQL: the same unit of work, peeled in layers.

Each row is the median of ``rounds`` runs on one event loop, interleaved:

- raw asyncpg: the five statements of a test (BEGIN, SAVEPOINT, INSERT, RELEASE, ROLLBACK) on
  one open connection, no SQLAlchemy: the floor;
- SQLAlchemy Core: the same statements through an ``AsyncConnection`` checked out of a pool;
- the recipe: an ``AsyncSession`` joined with ``create_savepoint`` (ORM unit of work, flush);
- a new connection: what a function-scoped loop pays on top, since a connection cannot outlive
  the loop it was opened on (connect, authenticate, close).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import insert

from ..databases import TestDatabase
from ..schema import create_tables
from ..demo.models import Base, User
from ..janitor import run_coroutine
from ..loops import loop_engine
from ..transactions import bind_sessionmaker, rollback_transaction

__all__ = ["breakdown"]


async def _layers(database: TestDatabase, rounds: int) -> dict[str, float]:
    import asyncpg  # PostgreSQL only: the bench runs on SQLite without the postgres extra

    dsn = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
    raw = await asyncpg.connect(dsn)
    engine = loop_engine(database.url)
    counter = iter(range(10**9))

    async def raw_asyncpg() -> None:
        await raw.execute("BEGIN")
        await raw.execute("SAVEPOINT s")
        await raw.execute("INSERT INTO users (email, name) VALUES ($1, 'u')", f"r{next(counter)}@x")
        await raw.execute("RELEASE SAVEPOINT s")
        await raw.execute("ROLLBACK")

    async def core() -> None:
        async with engine.connect() as connection:
            await connection.begin()
            nested = await connection.begin_nested()
            await connection.execute(insert(User).values(email=f"c{next(counter)}@x", name="u"))
            await nested.commit()
            await connection.rollback()

    async def recipe() -> None:
        async with rollback_transaction(engine) as connection:
            async with bind_sessionmaker(connection)() as session:
                session.add(User(email=f"o{next(counter)}@x", name="u"))
                await session.commit()

    async def new_connection() -> None:
        connection = await asyncpg.connect(dsn)
        await connection.close()

    layers: dict[str, Callable[[], Awaitable[None]]] = {
        "raw asyncpg, 5 statements": raw_asyncpg,
        "SQLAlchemy Core, pooled": core,
        "the recipe (AsyncSession, ORM)": recipe,
        "a new connection (function loop)": new_connection,
    }
    samples: dict[str, list[float]] = {name: [] for name in layers}
    try:
        for round_ in range(rounds + 10):
            names = list(layers)
            random.shuffle(names)
            for name in names:
                start = time.perf_counter()
                await layers[name]()
                if round_ >= 10:  # warm-up: prepared statements, pool, caches
                    samples[name].append(time.perf_counter() - start)
    finally:
        await raw.close()
        await engine.dispose()
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def breakdown(database: TestDatabase, rounds: int = 200) -> dict[str, float]:
    """Median milliseconds of each layer on a PostgreSQL test database."""
    create_tables(database, [Base.metadata])
    return run_coroutine(lambda: _layers(database, rounds))
