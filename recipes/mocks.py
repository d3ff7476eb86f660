"""A mock AsyncSession whose query results behave like real ones.

``AsyncMock(spec=AsyncSession)`` gets the session's shape right: the async methods
(``execute``, ``commit``, ``flush``, ``rollback``, ...) are AsyncMocks, the sync ones (``add``,
``expunge``, ``begin``) MagicMocks, and a misspelt attribute raises AttributeError. It gets the
result wrong: what an awaited ``execute()`` returns is an AsyncMock too, so
``result.scalar_one_or_none()`` hands the code a coroutine instead of a row. A coroutine is
truthy, so an assertion such as ``assert user`` passes by accident.

:func:`make_mock_session` fixes that: its ``execute()`` returns a *real* Result built in memory
by :func:`result_of`, so every way of reading it (``scalar_one_or_none()``, ``scalars().all()``,
``first()``, iteration) agrees, with the real semantics (``MultipleResultsFound``, a Result is
read once). The ``mock_session`` fixture gives each test a fresh one.

Pitfalls:

- A mock runs no SQL: it enforces no constraint and assigns no primary key. A test on it
  proves the code calls the session as the test expects; whether the database accepts the
  result needs a real database (the ``db_session`` fixture).
- ``assert_called_once()`` on an AsyncMock passes when the code forgot ``await``; assert
  ``assert_awaited_once()`` for async methods.
- ``side_effect`` wins over ``return_value``; a list of side effects raises
  ``StopAsyncIteration`` once it runs out.
- :func:`result_of` uses ``sqlalchemy.engine.result.SimpleResultMetaData``, which is not in
  SQLAlchemy's documented API: SQLAlchemy has no public way to build a Result without a
  cursor. It is the class SQLAlchemy builds its own cursor-less results with, and
  ``tests/test_mocks.py`` fails on the first release that changes it.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock

import pytest
from sqlalchemy.engine import IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["make_mock_session", "mock_session", "result_of"]


# --8<-- [start:result_of]
def result_of(*rows: Any) -> Result[Any]:
    """A real Result holding ``rows``, built in memory: what an awaited ``execute()`` returns.

    A tuple is a whole row; anything else is a one-column row, so ``result_of(user)`` serves
    ``scalar_one_or_none()`` and ``scalars().all()``, and ``result_of((1, "ada"))`` serves
    ``one()``. Like every Result it is read once: reading it again raises ResourceClosedError.
    """
    data = [row if isinstance(row, tuple) else (row,) for row in rows]
    width = len(data[0]) if data else 1
    # SimpleResultMetaData(keys) is how SQLAlchemy itself builds results that have no cursor.
    return IteratorResult(SimpleResultMetaData([f"column_{i}" for i in range(width)]), iter(data))
# --8<-- [end:result_of]


# --8<-- [start:make_mock_session]
def make_mock_session(*rows: Any) -> AsyncMock:
    """An ``AsyncMock(spec=AsyncSession)`` whose every query returns ``rows``.

    Each awaited ``execute()`` returns a new ``result_of(*rows)``; ``scalars()`` and
    ``scalar()`` read it as a real session does, and so count in ``execute.await_count``.
    Setting ``session.execute.return_value`` or ``.side_effect`` (a list: one result per
    call; an exception: raised) replaces that default. ``get()`` returns None.
    """
    session = AsyncMock(spec=AsyncSession)

    async def execute(*args: Any, **kwargs: Any) -> Result[Any]:
        return result_of(*rows)

    async def scalars(*args: Any, **kwargs: Any) -> Any:
        return (await session.execute(*args, **kwargs)).scalars()

    async def scalar(*args: Any, **kwargs: Any) -> Any:
        return (await session.execute(*args, **kwargs)).scalar()

    # wraps= is only the default: a return_value or side_effect set later wins over it.
    session.execute = AsyncMock(wraps=execute)
    session.scalars = AsyncMock(wraps=scalars)
    session.scalar = AsyncMock(wraps=scalar)
    session.get.return_value = None
    return session


@pytest.fixture
def mock_session() -> AsyncMock:
    """A fresh :func:`make_mock_session` for each test (function scope); queries return no rows."""
    return make_mock_session()
# --8<-- [end:make_mock_session]
