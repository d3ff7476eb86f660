"""Query counts: the statements a block of code sends to the database, and a limit on them.

:func:`count_queries` collects, while its block runs, every statement SQLAlchemy hands to the
driver on one connection (or engine), with its parameters. :func:`assert_max_queries` does
the same and fails when the block sent more than ``n``, listing every statement, numbered, as
pytest-django's ``django_assert_max_num_queries`` does. Use them as ``with`` blocks, in sync or
async tests alike: listening is synchronous.

What counts: what reaches the driver, from SQLAlchemy's ``before_cursor_execute`` event on the
connection's ``sync_connection``. A lazy load, each batch of ``selectinload``, each INSERT of a
flush and a Core ``connection.execute`` count once each; an identity-map hit counts nothing.
Transaction statements are left out unless ``include_savepoints=True``: ``SAVEPOINT``,
``RELEASE SAVEPOINT`` and ``ROLLBACK TO SAVEPOINT`` (every driver sends them as SQL; the
per-test transaction sends them on each ``commit()`` and ``rollback()``), and the ``BEGIN`` that
:func:`recipes.sqlite.enable_sqlite_fixes` sends. Otherwise asyncpg, psycopg and aiosqlite
begin, commit and roll back through their connection's methods, not a cursor: never seen. So a
block's count is the same on SQLite and PostgreSQL, except where the dialects really differ in
round trips: a flush of N new objects with database-generated keys is N INSERTs on SQLite, and
one per 1,000 rows on PostgreSQL (SQLAlchemy's "insertmanyvalues").

:func:`forbid_lazy_loads` makes every relationship an ORM query did not load eagerly raise
instead of loading, so that a stray lazy load fails the test where it happens.

Pitfalls:

- Count on the connection the code under test uses (the test's ``db_connection``): a listener
  on another engine or connection counts nothing, and an assertion on it always passes.
- Counting ORM executions (``do_orm_execute``, a spy on ``session.execute``) misses every
  statement of a flush and every statement run on a connection directly.
- A session that still holds the objects a test built answers from its identity map: seed the
  data through another session, or ``expunge_all()``, before counting a read.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, raiseload

__all__ = ["Bind", "Query", "QueryLog", "assert_max_queries", "count_queries", "forbid_lazy_loads"]

Bind = AsyncConnection | AsyncEngine | Connection | Engine  # what count_queries listens on

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 60, 60, 8, 8, 8


@dataclass(frozen=True)
class Query:
    """One statement as the driver received it, with its parameters.

    ``executemany``: SQLAlchemy ran it with several parameter sets (a flush of several rows);
    ``parameters`` is what this one round trip carried.
    """

    statement: str
    parameters: Any
    executemany: bool = False

    def __str__(self) -> str:
        return " ".join(self.statement.split())


class QueryLog(list[Query]):
    """The statements a block sent, in order: a list, so ``len()`` is the count."""

    include_savepoints = False

    @property
    def statements(self) -> list[str]:
        """The SQL of each statement, whitespace collapsed: easy to compare and to search."""
        return [str(query) for query in self]

    def report(self, at_most: int | None = None, info: str | None = None) -> str:
        """The count, and every statement numbered, with its parameters."""
        sent = f"{len(self)} statement{'' if len(self) == 1 else 's'}"
        head = f"the block sent {sent}"
        if at_most is not None:
            head = f"expected at most {at_most} statements, but {head}"
        lines = [head + (f" ({info})" if info else "") + ":"]
        width = len(str(len(self)))
        for number, query in enumerate(self, start=1):
            many = " (executemany)" if query.executemany else ""
            lines.append(f"{number:>{width}}. {query}")
            lines.append(f"{'':>{width}}  parameters{many}: {_REPR.repr(query.parameters)}")
        if not self.include_savepoints:
            lines.append("(savepoints not counted: include_savepoints=True counts them)")
        return "\n".join(lines)


# --8<-- [start:count_queries]
def _is_transaction_statement(statement: str) -> bool:
    # BEGIN (as SQLite's fix sends it) and savepoints: transaction control, not the code's work
    return re.fullmatch(
        r"\s*(BEGIN(\s+\w+)*|SAVEPOINT\s+\S+|RELEASE\s+(SAVEPOINT\s+)?\S+"
        r"|ROLLBACK\s+TO\s+(SAVEPOINT\s+)?\S+)\s*;?\s*",
        statement,
        re.IGNORECASE,
    ) is not None


@contextmanager
def count_queries(bind: Bind, *, include_savepoints: bool = False) -> Iterator[QueryLog]:
    """Collect the statements the ``with`` block sends through ``bind``, with their parameters.

    ``bind``: an AsyncConnection (its own statements only) or an AsyncEngine (every connection
    of it, other tests' included); or their sync versions. Transaction statements are left out
    unless ``include_savepoints`` (see the module docstring).
    """
    queries = QueryLog()
    queries.include_savepoints = include_savepoints
    # Events live on the sync objects that the async ones wrap.
    target = (bind.sync_connection if isinstance(bind, AsyncConnection)
              else bind.sync_engine if isinstance(bind, AsyncEngine) else bind)

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if include_savepoints or not _is_transaction_statement(statement):
            queries.append(Query(statement, parameters, executemany))

    event.listen(target, "before_cursor_execute", record)
    try:
        yield queries
    finally:
        event.remove(target, "before_cursor_execute", record)


@contextmanager
def assert_max_queries(bind: Bind, n: int, *, include_savepoints: bool = False,
                       info: str | None = None) -> Iterator[QueryLog]:
    """Fail when the ``with`` block sends more than ``n`` statements through ``bind``, with
    the count and every statement, numbered. A block that raises is not checked: its own
    error is the one to read. ``info`` is added to the message."""
    __tracebackhide__ = True  # pytest shows the test's line, not this one
    with count_queries(bind, include_savepoints=include_savepoints) as queries:
        yield queries
    if len(queries) > n:
        raise AssertionError(queries.report(at_most=n, info=info))
# --8<-- [end:count_queries]


# --8<-- [start:forbid_lazy_loads]
def forbid_lazy_loads(session: AsyncSession | Session) -> Callable[[], None]:
    """Add ``raiseload("*")`` to every ORM SELECT the session runs from now on.

    A relationship that the query did not load eagerly (``selectinload``, ``joinedload``) then
    raises ``InvalidRequestError: 'User.posts' is not available due to lazy='raise'`` when it
    is read, instead of a lazy load (one more query per object; ``MissingGreenlet`` on an
    ``AsyncSession``). ``awaitable_attrs`` raises too. The loads the ORM runs itself (eager
    loads, expired columns, ``refresh()``) are left alone. Returns a function removing it.
    """
    target = session.sync_session if isinstance(session, AsyncSession) else session

    def add_raiseload(state: ORMExecuteState) -> None:
        if state.is_select and not (state.is_relationship_load or state.is_column_load):
            state.statement = state.statement.options(raiseload("*"))

    event.listen(target, "do_orm_execute", add_raiseload)
    return lambda: event.remove(target, "do_orm_execute", add_raiseload)
# --8<-- [end:forbid_lazy_loads]
