"""The fixes every SQLite engine needs before tests can trust it.

Python's ``sqlite3`` (and ``aiosqlite`` on top of it) runs in *legacy transaction control*
through Python 3.15: it emits no ``BEGIN`` before a ``SAVEPOINT``. A session joined to a test's
outer transaction with ``join_transaction_mode="create_savepoint"`` then commits through a
savepoint that is not inside any transaction, and the row survives the test's rollback.
SQLAlchemy's documented fix takes transaction control away from the driver: a connect
listener sets ``isolation_level = None`` and a begin listener emits ``BEGIN`` itself.

SQLite also ignores foreign keys unless ``PRAGMA foreign_keys=ON`` is set on *every*
connection, so a test on SQLite accepts an orphan row that PostgreSQL refuses.

Pitfalls:

- ``connect_args={"autocommit": False}`` is the modern switch, but ``sqlite3.connect`` only
  accepts it from Python 3.12: on Python 3.11 it raises TypeError.
- Driver-level ``isolation_level="AUTOCOMMIT"`` is incompatible with these listeners.
- Listeners attach to ``engine.sync_engine``: an ``AsyncEngine`` has no events of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["enable_sqlite_fixes"]


# --8<-- [start:enable_sqlite_fixes]
def enable_sqlite_fixes(engine: AsyncEngine | Engine) -> None:
    """Make a SQLite engine honour savepoints, transactional DDL and foreign keys.

    Idempotent and a no-op for other dialects, so it is safe to call on every engine.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync_engine.dialect.name != "sqlite":
        return
    if event.contains(sync_engine, "connect", _on_connect):
        return
    event.listen(sync_engine, "connect", _on_connect)
    event.listen(sync_engine, "begin", _on_begin)


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN away from the driver; SQLAlchemy's begin listener emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")
# --8<-- [end:enable_sqlite_fixes]
