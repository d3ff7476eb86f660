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
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

__all__ = [
    "LeakedOperationWarning",
    "LoopMismatchError",
    "bind_sessionmaker",
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


class LoopMismatchError(RuntimeError):
    """An async connection was used from an event loop other than the one it was opened on.

    Raised before the driver sees the statement, COMMIT or ROLLBACK: asyncpg would otherwise
    fail with "attached to a different loop" and then "another operation is in progress",
    and the connection would be unusable for the rollback at teardown.
    """


# Every way SQLAlchemy reaches the driver: statements (savepoints included) go through
# before_execute / before_cursor_execute (exec_driver_sql skips the first); the root
# COMMIT and ROLLBACK reach the DBAPI connection with no statement.
_GUARDED_EVENTS = ("before_execute", "before_cursor_execute", "commit", "rollback")


def guard_loop(connection: AsyncConnection, explain: Callable[[str], str]) -> Callable[[], None]:
    """Refuse any use of ``connection`` from another event loop than the running one.

    ``explain(used_from)`` builds the error message. Returns a function removing the guard.
    """
    owner = asyncio.get_running_loop()

    def check(*_: object) -> None:
        __tracebackhide__ = True
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise LoopMismatchError(explain("a thread with no running event loop")) from None
        if running is not owner:
            raise LoopMismatchError(explain("another event loop"))

    target = connection.sync_connection
    assert target is not None
    for name in _GUARDED_EVENTS:
        event.listen(target, name, check)

    def remove() -> None:
        for name in _GUARDED_EVENTS:
            if event.contains(target, name, check):
                event.remove(target, name, check)

    return remove
