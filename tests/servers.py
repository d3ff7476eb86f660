"""Statements on a database server, outside every test's transaction: how the suite's tests
create, look for and drop databases, tables and roles beside the ones the plugin provisions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, text

from recipes.databases import make_engine


async def admin(url: URL, *statements: str, **params: Any) -> list[list[Any] | None]:
    """Run ``statements`` in order through a connection of their own (AUTOCOMMIT: CREATE and
    DROP DATABASE cannot run in a transaction); each one's rows, or None where it has none."""
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    results: list[list[Any] | None] = []
    try:
        async with engine.connect() as connection:
            for statement in statements:
                result = await connection.execute(text(statement), params)
                results.append(list(result.all()) if result.returns_rows else None)
    finally:
        await engine.dispose()
    return results
