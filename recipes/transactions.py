"""The per-test transaction: whatever the code under test commits, the test rolls back.

SQLAlchemy's recipe "Joining a Session into an External Transaction", async: the test opens one
connection and an outer transaction on it; every session of the test is bound to that
connection with ``join_transaction_mode="create_savepoint"``; at teardown the outer transaction
rolls back and the database is as it was.

What a caller may rely on:

- ``session.commit()`` releases a savepoint; nothing reaches the database for good.
- ``session.rollback()`` (an application recovering from an IntegrityError) rolls back to the
  savepoint only: rows the test seeded earlier stay, and the session stays usable.
- ``session.begin_nested()`` inside a test works as usual, one savepoint deeper.
- Every session from :func:`bind_sessionmaker` shares the connection, so two sessions of one
  test see each other's commits.
- ``expire_on_commit=False``: reading an attribute after ``commit()`` would otherwise reload
  it with IO, which an ``AsyncSession`` refuses (``MissingGreenlet``).

Pitfalls:

- The default ``join_transaction_mode`` (``"conditional_savepoint"``) does not create a
  savepoint when the connection is already in a plain transaction: the application's
  ``rollback()`` then rolls back the test's own outer transaction, seeded rows included.
- On SQLite, apply :func:`recipes.sqlite.enable_sqlite_fixes` to the engine first, or rows
  committed through a savepoint survive the rollback.
- Code that opens its *own* connection from the engine is outside the test transaction; give
  it :func:`bind_sessionmaker`'s sessionmaker instead (a dependency override).
- MySQL and MariaDB commit the open transaction before DDL (``CREATE``, ``ALTER``, ``DROP``,
  ``RENAME``, ``TRUNCATE``; also ``LOCK TABLES``, ``GRANT``, ``START TRANSACTION``) and end
  every savepoint with it: what the test wrote would stay in the test database, and so would
  the DDL. On a test's connection such a statement is refused before it runs, with
  :class:`ImplicitCommitError` (:func:`guard_loop` installs the check). Build tables in the
  schema (``db_metadata``, migrations), use ``CREATE TEMPORARY TABLE`` (no implicit commit, gone
  with the connection), or run DDL on a connection of its own and undo it there.
"""

from __future__ import annotations

import asyncio
import gc
import re
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

__all__ = [
    "ImplicitCommitError",
    "LeakedOperationWarning",
    "LoopMismatchError",
    "bind_sessionmaker",
    "close_sessions",
    "guard_loop",
    "rollback_transaction",
]


class LeakedOperationWarning(UserWarning):
    """A test left an operation running on its connection; the connection was discarded."""


# --8<-- [start:rollback_transaction]
@asynccontextmanager
async def rollback_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Yield a connection inside an outer transaction that is rolled back on exit.

    A connection whose rollback fails (a query the test left running, a cancelled query) is
    discarded instead: the server drops the transaction with it, and no pool reuses it.
    """
    connection = await engine.connect()
    transaction = await connection.begin()
    try:
        yield connection
    finally:
        try:
            if transaction.is_active:
                await transaction.rollback()
        except Exception as exc:
            await _discard(connection, exc)
        discarded = connection.invalidated
        await connection.close()
        if discarded and engine.dialect.name == "sqlite":
            # A cancelled aiosqlite query leaves its connection closed but alive ("zombie")
            # until its last statement is freed, and with it the write lock the next test needs.
            gc.collect()  # here, not in the except block, whose exception still holds it


async def _discard(connection: AsyncConnection, exc: Exception) -> None:
    """Invalidate a connection whose rollback failed, and warn that the test left it busy."""
    warnings.warn(
        f"the test left its connection busy ({type(exc).__name__}); it was discarded",
        LeakedOperationWarning,
        stacklevel=3,
    )
    await connection.invalidate()


def bind_sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """A sessionmaker whose sessions join ``connection``'s transaction through savepoints."""
    return async_sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )
# --8<-- [end:rollback_transaction]


async def close_sessions(
    engine: AsyncEngine, connection: AsyncConnection, sessions: list[AsyncSession]
) -> None:
    """Close a test's sessions at teardown, before :func:`rollback_transaction` exits, whatever
    the test left behind on their connection:

    - An operation still running (a task the test left awaiting a query): closing would wait
      for it behind SQLAlchemy's per-connection lock, as long as the query runs, while its
      transaction holds its locks (the next test writing the same row would wait too). It is
      stopped where it runs, with a :class:`LeakedOperationWarning`: on PostgreSQL
      ``pg_terminate_backend`` ends it with its server process, and the connection is
      discarded; on MySQL and MariaDB ``KILL`` (from another connection) ends the connection,
      and the server rolls back its transaction; on SQLite it is interrupted, and once its task has let go of the connection,
      teardown goes on as usual.
    - A connection the server ended (``pg_terminate_backend``, a restart) that the test did not
      notice: closing fails; SQLAlchemy has invalidated it, and the server rolled back with it.
      Nothing to warn about: the next test gets a new connection.
    - Any other failure to close: the connection is discarded, with the warning of ``_discard``.
    """
    if _busy(connection):
        await _stop_operation(engine, connection)
        if engine.dialect.name == "sqlite":
            for _ in range(500):  # the interrupted query fails in its task, which lets go of it
                if not _busy(connection):
                    break
                await asyncio.sleep(0.01)
        else:
            await connection.invalidate()
        warnings.warn(
            "the test left an operation running on its connection (a task still awaiting a "
            "query); it was stopped"
            + (" and the connection discarded" if connection.invalidated else ""),
            LeakedOperationWarning,
            stacklevel=2,
        )
    for session in sessions:
        try:
            await session.close()
        except Exception as exc:
            if not connection.invalidated:
                await _discard(connection, exc)


def _busy(connection: AsyncConnection) -> bool:
    """Whether an operation holds the connection. psycopg 3 says so (transaction status
    ``ACTIVE``: a command in progress); for asyncpg and aiosqlite, SQLAlchemy's adapter holds
    its per-connection lock (``_execute_mutex``, not public API: if it goes, this says "not
    busy" and teardown waits for the operation, as it did before)."""
    if connection.invalidated or connection.closed:
        return False
    adapted = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    status = getattr(getattr(adapted.driver_connection, "info", None), "transaction_status", None)
    if status is not None:
        return getattr(status, "name", "") == "ACTIVE"
    mutex = getattr(adapted, "_execute_mutex", None)
    if isinstance(mutex, asyncio.Lock):
        return mutex.locked()
    # SQLAlchemy 2.0's aiosqlite adapter has no such lock: the statements in flight, counted
    return _IN_FLIGHT.get(connection.sync_connection, 0) > 0  # type: ignore[arg-type]


async def _stop_operation(engine: AsyncEngine, connection: AsyncConnection) -> None:
    """End the operation running on ``connection`` where it runs; best effort."""
    driver = (await connection.get_raw_connection()).driver_connection
    try:
        if engine.dialect.name == "sqlite":
            await driver.interrupt()  # sqlite3's interrupt(): the query fails at once
            return
        if engine.dialect.name == "mysql":
            await _kill_mysql_connection(engine, driver.thread_id())
            return
        # asyncpg, psycopg: the server process, known since connecting (no round trip)
        if hasattr(driver, "get_server_pid"):
            pid = driver.get_server_pid()
        else:
            pid = driver.info.backend_pid
        version = engine.dialect.server_version_info or (0,)
        wait = ", 5000" if version >= (14,) else ""  # PostgreSQL 14+: until the process is gone
        async with engine.connect() as other:  # another connection: this one is busy
            await other.execute(text(f"SELECT pg_terminate_backend(:pid{wait})"), {"pid": pid})
    except Exception as exc:  # the connection is discarded anyway; the server ends the rest
        warnings.warn(
            f"could not stop the leftover operation ({type(exc).__name__}: {exc})",
            LeakedOperationWarning,
            stacklevel=3,
        )


async def _kill_mysql_connection(engine: AsyncEngine, thread_id: int) -> None:
    """``KILL`` a MySQL connection (its id known since connecting: aiomysql and asyncmy keep the
    handshake's), from another one, and wait until the server has rolled it back (5 s at most:
    ``KILL`` only flags it), so that the next test does not meet its locks."""
    async with engine.connect() as other:
        try:
            await other.execute(text(f"KILL {int(thread_id)}"))
        except Exception:  # gone already (1094, unknown thread id)
            return
        for _ in range(500):
            gone = not await other.scalar(
                text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id"),
                {"id": int(thread_id)},
            )
            if gone:
                return
            await asyncio.sleep(0.01)


class ImplicitCommitError(RuntimeError):
    """A statement that would commit the test's transaction implicitly (DDL on MySQL and
    MariaDB) was refused before it ran."""


# What MySQL commits the open transaction before (its manual, "Statements That Cause an
# Implicit Commit"), but for CREATE/DROP TEMPORARY TABLE, which do not.
_IMPLICIT_COMMIT = re.compile(
    r"\s*(?!(?:CREATE|DROP)\s+TEMPORARY\b)(ALTER|CREATE|DROP|RENAME|TRUNCATE|LOCK|UNLOCK|GRANT|"
    r"REVOKE|START\s+TRANSACTION|BEGIN|ANALYZE|OPTIMIZE|REPAIR|FLUSH)\b",
    re.IGNORECASE,
)


def _refuse_implicit_commit(cursor: Any, statement: str, *args: Any) -> None:
    """The dialect's listener on MySQL: a guarded connection (a test's) may not send a statement
    that would commit its transaction. Returns None: any other statement goes on as usual."""
    __tracebackhide__ = True
    if args[-1].root_connection not in _OWNERS:  # schema creation, the janitor's, the user's own
        return
    found = _IMPLICIT_COMMIT.match(statement)
    if found:
        shown = " ".join(statement.split())[:60]
        raise ImplicitCommitError(
            f"recipes: MySQL and MariaDB commit the open transaction before {found[1].upper()} "
            f"({shown!r}): it would end the test's transaction, and what the test wrote would "
            "stay in the test database. It was not run. Put tables in the schema (db_metadata, "
            "migrations), use CREATE TEMPORARY TABLE, or run DDL on a connection of its own."
        )


class LoopMismatchError(RuntimeError):
    """An async connection was used from an event loop other than the one it was opened on.

    Raised before the statement reaches the driver: asyncpg would otherwise fail with
    "attached to a different loop" and then "another operation is in progress", and the
    connection would be unusable for the rollback at teardown.
    """


# Every statement SQLAlchemy sends (savepoints, exec_driver_sql included) goes through one of
# the dialect's execute hooks, right before the driver's cursor runs it.
_GUARDED_EVENTS = ("do_execute", "do_execute_no_params", "do_executemany")

# The guarded connections: each one's event loop, and how to word the error. Weak: an entry
# goes with its connection.
_OWNERS: weakref.WeakKeyDictionary[Connection, tuple[asyncio.AbstractEventLoop, Callable[[str], str]]] = (
    weakref.WeakKeyDictionary()
)
_GUARDED_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()  # those with the listeners


def guard_loop(connection: AsyncConnection, explain: Callable[[str], str]) -> Callable[[], None]:
    """Refuse any statement on ``connection`` from another event loop than the running one.

    ``explain(used_from)`` builds the error message. Returns a function removing the guard.

    The guard listens to the *dialect's* execute hooks, once per engine; each test only records
    its connection's loop in a table they read. Measured (Python calls per test, which a busy
    machine does not blur): connection events, ``before_execute`` and the like, cost more than
    the check itself, listened to on the engine (about 220 calls more per test, 14 % of the
    inline recipe's 1,530) or on each connection (540); the dialect's hooks, 10. Connection
    events make SQLAlchemy dispatch at every step of every connection (connect, begin,
    savepoint, execute, release, rollback), the dialect's only where a statement is sent.

    What it does not see: the root ``COMMIT`` and ``ROLLBACK``, which reach the driver without
    a statement and without a dialect hook. The test's own rollback runs on the test's loop;
    the sessions of :func:`bind_sessionmaker` commit and roll back through savepoints, which
    are statements. Only code that commits the test's connection itself (which would end the
    isolation anyway) from another loop gets the driver's error instead; the rollback at
    teardown then discards the connection (:func:`rollback_transaction`).
    """
    target = connection.sync_connection
    assert target is not None
    engine = target.engine
    if engine not in _GUARDED_ENGINES:
        for name in _GUARDED_EVENTS:
            event.listen(engine, name, _check_loop)
            if engine.dialect.name == "mysql":
                event.listen(engine, name, _refuse_implicit_commit)
        if _needs_counting(connection):
            # Connection events, so only where _busy() has nothing else to go by: they make
            # every step of every connection of the engine dispatch (see above).
            event.listen(engine, "before_cursor_execute", _started)
            event.listen(engine, "after_cursor_execute", _ended)
            event.listen(engine, "handle_error", lambda context: _ended(context.connection))
        _GUARDED_ENGINES.add(engine)
    _OWNERS[target] = (asyncio.get_running_loop(), explain)

    def remove() -> None:
        _OWNERS.pop(target, None)

    return remove


_IN_FLIGHT: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()


def _needs_counting(connection: AsyncConnection) -> bool:
    """Whether :func:`_busy` must count statements in flight on this engine's connections:
    only where the driver does not say (psycopg's transaction status) and SQLAlchemy's adapter
    has no per-connection lock (its aiosqlite adapter before 2.1)."""
    adapted = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    if getattr(getattr(adapted.driver_connection, "info", None), "transaction_status", None) is not None:
        return False
    return not isinstance(getattr(adapted, "_execute_mutex", None), asyncio.Lock)


def _started(connection: Connection, *_: object) -> None:
    _IN_FLIGHT[connection] = _IN_FLIGHT.get(connection, 0) + 1


def _ended(connection: Connection | None, *_: object) -> None:
    if connection is not None and _IN_FLIGHT.get(connection, 0) > 0:
        _IN_FLIGHT[connection] -= 1


def _check_loop(*args: Any) -> None:
    """The dialect's listener (``cursor, statement, [parameters,] context``): a guarded
    connection must be used on its own loop. Returns None: the statement goes on as usual."""
    __tracebackhide__ = True
    guard = _OWNERS.get(args[-1].root_connection)
    if guard is None:  # a connection no test guards (schema creation, the janitor's)
        return
    owner, explain = guard
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        raise LoopMismatchError(explain("a thread with no running event loop")) from None
    if running is not owner:
        raise LoopMismatchError(explain("another event loop"))
