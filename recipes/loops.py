"""The per-test transaction on the event loop the test runs on, whatever that loop is.

pytest-asyncio picks an async fixture's loop from the fixture's ``loop_scope``, else
``asyncio_default_fixture_loop_scope``, else its scope; and a test's loop from its asyncio
marker, else ``asyncio_default_test_loop_scope``. Nothing makes the two agree, and an asyncpg
connection opened on one loop fails on another ("attached to a different loop", then "another
operation is in progress"). So :mod:`recipes.plugin`'s public fixtures are sync dispatchers:
:func:`route` reads the test and names the internal async fixture that runs on its loop:

- a pytest-asyncio test with loop scope S: ``_recipes_transaction_S``, declared with
  ``pytest_asyncio.fixture(loop_scope=S)``, which pytest-asyncio runs on the test's runner;
- an anyio test (``anyio_backend`` among its fixtures): ``_recipes_transaction_anyio``, a plain
  async fixture, which anyio's plugin runs in the test's own runner;
- a sync test: the function loop.

Every connection is guarded (:func:`recipes.transactions.guard_loop`): used from any other loop
it raises ``LoopMismatchError`` with :func:`mismatch_message`, which names the test's loop and
the test's fixtures that run on another one.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import AsyncAdaptedQueuePool

from .databases import make_test_engine
from .transactions import bind_sessionmaker, close_sessions, guard_loop, rollback_transaction

__all__ = ["ANYIO", "loop_engine", "LOOP_SCOPES", "PUBLIC", "LoopTransaction", "loop_scope_of", "loop_transaction", "mismatch_message", "route"]

LOOP_SCOPES = ("function", "class", "module", "package", "session")
ANYIO = "_recipes_transaction_anyio"
PUBLIC = ("db_connection", "db_sessionmaker", "db_session")


@dataclass(repr=False)
class LoopTransaction:
    """What the internal fixture hands the public dispatchers: one connection, its sessions."""

    __test__ = False
    connection: AsyncConnection
    sessionmaker: async_sessionmaker[AsyncSession]
    sessions: list[AsyncSession] = field(default_factory=list)
    fixtures: list[str] = field(default_factory=list)
    item: pytest.Item | None = None  # the test, set by the dispatcher (for the error message)

    def __repr__(self) -> str:
        # cheap: asyncio formats the fixture task's repr, result included, at every setup
        return f"<LoopTransaction {len(self.sessions)} sessions>"


@asynccontextmanager
async def loop_transaction(engine: AsyncEngine, loop: str | None) -> AsyncIterator[LoopTransaction]:
    async with rollback_transaction(engine) as connection:
        state = LoopTransaction(connection, bind_sessionmaker(connection))
        unguard = guard_loop(connection, lambda used_from: mismatch_message(state, loop, used_from))
        try:
            yield state
            await close_sessions(engine, connection, state.sessions)  # whatever the test left running
        finally:
            # the guard's entry holds this message, which holds the connection it is keyed on:
            # left there, every test's connection and sessions would stay in memory to the end
            unguard()


def loop_scope_of(item: pytest.Item) -> str:
    """pytest-asyncio's rule: the closest asyncio marker's loop_scope, else the ini default."""
    marker = item.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") if marker else None
    return str(scope or item.config.getini("asyncio_default_test_loop_scope") or "function")


def route(request: pytest.FixtureRequest, fixture: str) -> str:
    item = request.node
    by_pytest_asyncio = pytest_asyncio.is_async_test(item)
    if "anyio_backend" in request.fixturenames:
        if by_pytest_asyncio:
            why = ("pytest-asyncio's auto mode took over this @pytest.mark.anyio test"
                   if item.get_closest_marker("anyio") else "pytest-asyncio runs this test")
            pytest.fail(
                f"recipes: {fixture} cannot run on {item.nodeid}'s event loop: {why}, but "
                "anyio_backend is among its fixtures, so anyio runs every async fixture of it on "
                "anyio's own loop. Use one plugin per test: set asyncio_mode = strict to keep "
                "@pytest.mark.anyio tests with anyio, or mark the test @pytest.mark.asyncio and keep "
                "anyio_backend out of its fixtures.",
                pytrace=False,
            )
        backend = request.getfixturevalue("anyio_backend")
        name = backend if isinstance(backend, str) else backend[0]
        if name != "asyncio":
            pytest.fail(
                f"recipes: {fixture} needs asyncio, but {item.nodeid} runs on the anyio backend "
                f"{name!r}: make the anyio_backend fixture return 'asyncio'.",
                pytrace=False,
            )
        return ANYIO
    # a pytest-asyncio test: its loop; anything else (a sync test): the function loop, as before
    return f"_recipes_transaction_{loop_scope_of(item) if by_pytest_asyncio else 'function'}"


def _fixture_loop_scope(fixturedef: Any, config: pytest.Config, mode: str) -> tuple[str, bool] | None:
    """(the loop scope pytest-asyncio runs this fixture on, whether the fixture says so itself);
    None if pytest-asyncio does not run it. Only used to word an error message."""
    func = getattr(fixturedef.func, "__func__", fixturedef.func)
    marked = getattr(func, "_force_asyncio_fixture", False)
    if not marked and not (mode == "auto" and (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func))):
        return None
    # during its setup pytest-asyncio swaps in a wrapper carrying the effective loop scope
    own = getattr(getattr(func, "__wrapped__", func), "_loop_scope", None)
    default = config.getini("asyncio_default_fixture_loop_scope")
    if not default or default == "fixture-scope":
        default = fixturedef.scope
    return (own or default), own is not None


def _suspects(item: pytest.Item, loop: str) -> list[tuple[str, str, bool]]:
    """Async fixtures of the test that use a db_* fixture and run on another loop scope."""
    try:
        name2defs = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    except AttributeError:
        return []
    mode = str(item.config.getoption("asyncio_mode", None) or item.config.getini("asyncio_mode"))
    uses_db: dict[str, bool] = {}

    def uses(name: str) -> bool:
        if name in PUBLIC:
            return True
        if name not in uses_db:
            uses_db[name] = False
            defs = name2defs.get(name)
            uses_db[name] = bool(defs) and any(uses(arg) for arg in defs[-1].argnames)
        return uses_db[name]

    found = []
    for name, defs in name2defs.items():
        if name in PUBLIC or not defs or not uses(name):
            continue
        runs = _fixture_loop_scope(defs[-1], item.config, mode)
        if runs is not None and runs[0] != loop:
            found.append((name, *runs))
    return found


def mismatch_message(state: LoopTransaction, loop: str | None, used_from: str) -> str:
    item = state.item
    assert item is not None, "the dispatcher sets it before the test can use the connection"
    fixture = " / ".join(state.fixtures) or "db_connection"
    if loop is None:
        runs_on, advice = "the anyio runner's loop", ""
    else:
        runs_on = f"pytest-asyncio loop scope {loop!r}"
        if not pytest_asyncio.is_async_test(item):
            runs_on += f"; {item.name} itself is not an async test, so no loop runs it"
        suspects = _suspects(item, loop)
        advice = ""
        if suspects:
            named = ", ".join(
                f"{name} (loop scope {scope!r}, {'its own loop_scope' if own else 'asyncio_default_fixture_loop_scope'})"
                for name, scope, own in suspects
            )
            fix = f"declare them with @pytest_asyncio.fixture(loop_scope={loop!r})"
            if not all(own for _, _, own in suspects):
                fix += f", or set asyncio_default_fixture_loop_scope = {loop}"
            advice = f" Fixtures of this test that use it on another loop: {named}. To fix, {fix}."
    return (
        f"recipes: {fixture} of {item.nodeid} belongs to the event loop the test runs on "
        f"({runs_on}), but was used from {used_from}.{advice} Code that runs in a thread of its "
        "own (Starlette's TestClient) cannot use it: call the app through httpx.AsyncClient with "
        "ASGITransport instead."
    )


# The dispatchers request db_engine statically so that db_url (parametrized when several
# databases are configured) is in every database test's closure.


def loop_engine(url: URL | str) -> AsyncEngine:
    """A pooled engine for one long-lived event loop: create it, use it and dispose of it there.

    ``pool_reset_on_return=None``: every connection comes back from
    :func:`~recipes.transactions.rollback_transaction`, which has already rolled back (or
    invalidated) it, so the pool's own reset would be one more round trip per test.

    ``pool_pre_ping=True``: a pooled connection may have died since the last test (the server
    restarted, or ended it: ``pg_terminate_backend``, ``idle_session_timeout``); the check at
    checkout finds it and the pool connects anew, where the next test would otherwise fail on
    its first query ("connection is closed"). What the check costs: see
    :func:`~recipes.databases.make_test_engine`.
    """
    return make_test_engine(
        url, poolclass=AsyncAdaptedQueuePool, pool_reset_on_return=None, pool_pre_ping=True
    )
