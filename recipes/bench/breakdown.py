"""Where a test's database time goes, on PostgreSQL: the same unit of work, peeled in layers.

Every layer runs on one event loop, interleaved with the others in a new random order each
round, after warm-up rounds; each row is the median over the rounds (wall time, and the CPU
time of this process: the client's share), with the spread between the even and the odd
rounds.

**Per test, on a session loop** (a pooled connection, the test's five statements: BEGIN,
SAVEPOINT, INSERT, RELEASE, ROLLBACK):

- raw asyncpg, on one open connection, no SQLAlchemy: the floor;
- SQLAlchemy Core through a pooled ``AsyncConnection``;
- the inline recipe: an ``AsyncSession`` joined with ``create_savepoint`` (ORM unit of work);
- the plugin's ``loop_transaction``, which ``db_session`` runs: the recipe plus the loop guard
  and the sessions' bookkeeping, on the plugin's pooled engine (:func:`recipes.loops.loop_engine`);
- what the plugin's path once added, alone: the loop guard as four listeners on each connection
  (it is now the engine's, :func:`recipes.transactions.guard_loop`), and SQLAlchemy's
  ``pool_pre_ping`` on asyncpg (BEGIN, ``;``, ROLLBACK at each checkout; now a check of the socket,
  :func:`recipes.databases.make_engine`).

**Per new connection, on a function loop** (an asyncpg connection cannot outlive its loop, so
each test opens one, and closes it):

- asyncpg's defaults: ``ssl="prefer"`` (an SSL context, and the SSL request the server
  refuses), then ``close()``, which waits for the server to end its process;
- ``ssl=False``, then ``close()``; ``ssl=False``, then ``terminate()``;
- SQLAlchemy's own per-connection setup on asyncpg: the json and jsonb codecs;
- through SQLAlchemy: ``create_async_engine`` defaults (NullPool), and the plugin's
  :func:`~recipes.databases.make_engine`, which skips the SSL attempt against a server without
  SSL and closes idle connections without waiting.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from ..databases import TestDatabase, make_engine
from ..demo.models import Base, User
from ..janitor import run_coroutine
from ..loops import loop_engine, loop_transaction
from ..schema import create_tables

__all__ = ["Layer", "breakdown"]

SESSION, FUNCTION = "per test, session loop", "per new connection, function loop"
Layer = dict[str, Any]  # {"group": SESSION or FUNCTION, "ms", "cpu_ms", "spread_ms"}


async def _layers(database: TestDatabase, rounds: int) -> dict[str, Layer]:
    import asyncpg  # PostgreSQL only: the bench runs on SQLite without the postgres extra

    dsn = database.url.set(drivername="postgresql").render_as_string(hide_password=False)
    counter = iter(range(10**9))
    async with AsyncExitStack() as stack:
        raw = await asyncpg.connect(dsn)
        stack.push_async_callback(raw.close)

        def engine(**kwargs: Any) -> Any:
            made = create_async_engine(database.url, **kwargs)
            stack.push_async_callback(made.dispose)
            return made

        default = engine()  # what a user's inline fixture gets: QueuePool, asyncpg's defaults
        pinged = engine(pool_pre_ping=True)
        plugin = loop_engine(database.url)
        stack.push_async_callback(plugin.dispose)
        fresh_default = engine(poolclass=NullPool)
        fresh_plugin = make_engine(database.url)
        stack.push_async_callback(fresh_plugin.dispose)
        async with fresh_plugin.connect():  # learns, once, that the server has SSL off
            pass
        codecs = await default.connect()
        stack.push_async_callback(codecs.close)
        adapted = (await codecs.get_raw_connection()).dbapi_connection
        dialect = default.dialect

        async def raw_asyncpg() -> None:
            await raw.execute("BEGIN")
            await raw.execute("SAVEPOINT s")
            await raw.execute("INSERT INTO users (email, name) VALUES ($1, 'u')", f"r{next(counter)}@x")
            await raw.execute("RELEASE SAVEPOINT s")
            await raw.execute("ROLLBACK")

        async def core() -> None:
            async with default.connect() as connection:
                await connection.begin()
                nested = await connection.begin_nested()
                await connection.execute(insert(User).values(email=f"c{next(counter)}@x", name="u"))
                await nested.commit()
                await connection.rollback()

        async def inline_recipe() -> None:
            async with default.connect() as connection:
                transaction = await connection.begin()
                async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint",
                                        expire_on_commit=False) as session:
                    session.add(User(email=f"o{next(counter)}@x", name="u"))
                    await session.commit()
                await transaction.rollback()

        async def plugin_transaction() -> None:
            async with loop_transaction(plugin, "session") as state:
                session = state.sessionmaker()
                state.sessions.append(session)
                session.add(User(email=f"p{next(counter)}@x", name="u"))
                await session.commit()

        def check(*_: object) -> None:
            asyncio.get_running_loop()

        async def connection_listeners() -> None:
            async with default.connect() as connection:
                for name in ("before_execute", "before_cursor_execute", "commit", "rollback"):
                    event.listen(connection.sync_connection, name, check)

        async def checkout() -> None:
            async with default.connect():
                pass

        async def checkout_pre_ping() -> None:
            async with pinged.connect():
                pass

        async def checkout_socket_check() -> None:
            async with plugin.connect():
                pass

        async def asyncpg_default() -> None:
            await (await asyncpg.connect(dsn)).close()

        async def asyncpg_no_ssl() -> None:
            await (await asyncpg.connect(dsn, ssl=False)).close()

        async def asyncpg_no_ssl_terminate() -> None:
            (await asyncpg.connect(dsn, ssl=False)).terminate()

        async def json_codecs() -> None:
            await dialect.setup_asyncpg_json_codec(adapted)
            await dialect.setup_asyncpg_jsonb_codec(adapted)

        async def sqlalchemy_default() -> None:
            async with fresh_default.connect():
                pass

        async def sqlalchemy_make_engine() -> None:
            async with fresh_plugin.connect():
                pass

        layers: dict[str, tuple[str, Callable[[], Awaitable[None]]]] = {
            "raw asyncpg, the 5 statements": (SESSION, raw_asyncpg),
            "SQLAlchemy Core, pooled": (SESSION, core),
            "the inline recipe (AsyncSession, create_savepoint)": (SESSION, inline_recipe),
            "the plugin's loop_transaction (db_session without pytest)": (SESSION, plugin_transaction),
            "pooled checkout + checkin": (SESSION, checkout),
            "  with SQLAlchemy's pool_pre_ping (was the plugin's)": (SESSION, checkout_pre_ping),
            "  with the plugin's closed-socket check (is)": (SESSION, checkout_socket_check),
            "  with the loop guard as 4 connection listeners (was)": (SESSION, connection_listeners),
            "asyncpg connect + close(), defaults (ssl=prefer)": (FUNCTION, asyncpg_default),
            "asyncpg connect + close(), ssl=False": (FUNCTION, asyncpg_no_ssl),
            "asyncpg connect + terminate(), ssl=False": (FUNCTION, asyncpg_no_ssl_terminate),
            "SQLAlchemy's json + jsonb codec setup (on connect)": (FUNCTION, json_codecs),
            "SQLAlchemy connect + close, create_async_engine defaults": (FUNCTION, sqlalchemy_default),
            "SQLAlchemy connect + close, the plugin's make_engine": (FUNCTION, sqlalchemy_make_engine),
        }
        wall: dict[str, list[float]] = {name: [] for name in layers}
        cpu: dict[str, list[float]] = {name: [] for name in layers}
        warmup = 10  # prepared statements, pools, caches
        for round_ in range(warmup + rounds):
            names = list(layers)
            random.shuffle(names)
            for name in names:
                start, start_cpu = time.perf_counter(), time.process_time()
                await layers[name][1]()
                if round_ >= warmup:
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
    return {
        name: {
            "group": group,
            "ms": statistics.median(wall[name]) * 1000,
            "cpu_ms": statistics.median(cpu[name]) * 1000,
            "spread_ms": (abs(statistics.median(wall[name][0::2]) - statistics.median(wall[name][1::2])) * 1000
                          if rounds >= 2 else None),
        }
        for name, (group, _) in layers.items()
    }


def breakdown(database: TestDatabase, rounds: int = 200) -> dict[str, Layer]:
    """Each layer's median milliseconds (wall, this process's CPU, spread) on a PostgreSQL test
    database, by name, with its group."""
    create_tables(database, [Base.metadata])
    return run_coroutine(lambda: _layers(database, rounds))
