"""Per-test isolation strategies, timed in process, interleaved, on one event loop.

Each strategy is an async context manager factory: entering it is the test's setup and yields
an ``AsyncSession``; leaving it is the teardown. The timed body is the same for all: insert one
user and commit. Every strategy leaves the database empty; :func:`measure` checks that.
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from ..databases import TestDatabase
from ..schema import create_tables
from ..demo.models import Base, User
from ..loops import loop_engine
from ..sqlite import enable_sqlite_fixes
from ..transactions import bind_sessionmaker, rollback_transaction

__all__ = ["Measurement", "STRATEGIES", "measure"]

Strategy = Callable[[AsyncEngine], AbstractAsyncContextManager[AsyncSession]]


@asynccontextmanager
async def inline_savepoint(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """(a) The bare SQLAlchemy recipe, written inline: the baseline."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@asynccontextmanager
async def recipes_db_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """(b) What the plugin's ``db_session`` does: :mod:`recipes.transactions`."""
    async with rollback_transaction(engine) as connection:
        async with bind_sessionmaker(connection)() as session:
            yield session


@asynccontextmanager
async def truncate(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """(c) Commit for real, then empty every table."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(table.delete())


@asynccontextmanager
async def drop_create(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """(d) Commit for real, then drop the demo schema and create it again."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)


STRATEGIES: dict[str, Strategy] = {
    "inline savepoint (a)": inline_savepoint,
    "recipes db_session (b)": recipes_db_session,
    "truncate (c)": truncate,
    "drop + create (d)": drop_create,
}


@dataclass
class Measurement:
    backend: str
    strategy: str
    median_ms: float
    ratio: float
    samples: int
    spread_ms: float | None = None  # between the medians of the even and of the odd rounds


async def _one_test(strategy: Strategy, engine: AsyncEngine, n: int) -> float:
    start = time.perf_counter()
    async with strategy(engine) as session:
        session.add(User(email=f"bench-{n}@example.com", name="bench"))
        await session.commit()
    return time.perf_counter() - start


async def _run(database: TestDatabase, rounds: int, warmup: int) -> dict[str, list[float]]:
    engine = create_async_engine(database.url)  # pooled: one loop, as on a session loop
    enable_sqlite_fixes(engine)
    plugin_engine = loop_engine(database.url)  # what the plugin's fixtures use on such a loop
    samples: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    counter = itertools.count()
    try:
        names = list(STRATEGIES)
        for round_ in range(warmup + rounds):
            random.shuffle(names)  # interleaved: drift in the machine hits every strategy alike
            for name in names:
                strategy_engine = plugin_engine if name == "recipes db_session (b)" else engine
                elapsed = await _one_test(STRATEGIES[name], strategy_engine, next(counter))
                if round_ >= warmup:
                    samples[name].append(elapsed)
        async with engine.connect() as connection:
            left = await connection.scalar(select(func.count()).select_from(User))
        if left:
            raise RuntimeError(f"a strategy left {left} rows behind: the benchmark is invalid")
    finally:
        await engine.dispose()
        await plugin_engine.dispose()
    return samples


def measure(database: TestDatabase, rounds: int = 300, warmup: int = 30) -> list[Measurement]:
    """Time every strategy on ``database`` (schema created), interleaved; medians in ms, with
their spread between the even and the odd rounds."""
    from ..janitor import run_coroutine

    create_tables(database, [Base.metadata])
    samples = run_coroutine(lambda: _run(database, rounds, warmup))
    baseline = statistics.median(samples["inline savepoint (a)"])
    return [
        Measurement(
            database.dialect,
            name,
            statistics.median(values) * 1000,
            statistics.median(values) / baseline,
            len(values),
            _spread(values) * 1000 if len(values) >= 2 else None,
        )
        for name, values in samples.items()
    ]


def _spread(values: list[float]) -> float:
    """How far the median moves between two halves of the rounds (even and odd ones), which
    ran interleaved: a difference smaller than that is not a result."""
    return abs(statistics.median(values[0::2]) - statistics.median(values[1::2]))

