"""HTTP tests of a FastAPI app in the test's transaction: an AsyncClient over ASGITransport.

:func:`http_client` yields an ``AsyncClient`` (httpx2, or httpx) that calls the app in the
test's own event loop, with no server and no thread. Wherever the app depends on
``dependency`` (its ``get_session``), a request gets its session from ``sessionmaker``
instead: the plugin's ``db_sessionmaker``, whose sessions join the test's transaction through
savepoints. What one request commits, the next request and the test see; the test's rollback
removes it all::

    @pytest_asyncio.fixture
    async def client(db_sessionmaker):
        async with http_client(app, db_sessionmaker, dependency=get_session) as client:
            yield client

What a caller may rely on:

- The app's lifespan runs (:func:`run_lifespan`): startup before the block; shutdown after it,
  as a server would shut down, whether the block raised or not. State the lifespan yields
  reaches ``request.state``, as under a server. ``lifespan=False`` skips both.
- Afterwards ``app.dependency_overrides`` is what it was before the block, overrides that the
  test added inside it included, whether the block raised or not.
- A ``dependency`` that no route of the app depends on, directly or through other
  dependencies, is refused with :class:`DependencyNotFound` before anything runs. FastAPI
  looks an override up by the callable a route names in ``Depends(...)`` and ignores a key
  that matches none: the requests would silently use the app's own database.

Pitfalls:

- Starlette's ``TestClient`` runs the app in a thread of its own, on an event loop of its
  own. The test's connection belongs to the test's loop: on asyncpg a request fails with
  *"got Future ... attached to a different loop"* (the plugin's guard: ``LoopMismatchError``).
  On aiosqlite the same test passes, until it runs on PostgreSQL.
- The key is the callable inside ``Depends(...)``: not an ``Annotated`` alias
  (``SessionDep``), not the type it returns, not a function of the same name elsewhere.
- Each request gets a session of its own, as in production. Objects the test loaded into
  ``db_session`` keep the values they had: ``await db_session.refresh(obj)`` after a request.
- The override yields a plain session, as a ``get_session`` that does ``async with
  sessionmaker() as session: yield session`` does; a dependency that commits after the
  endpoint needs an override that does the same.
- Only the lifespan the app was given runs, not middleware's; an app mounted inside the app
  has overrides of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

try:  # httpx2: the maintained fork of httpx, the one Starlette's TestClient prefers
    import httpx2 as httpx
except ModuleNotFoundError:  # httpx 0.28 works the same
    import httpx  # type: ignore[no-redef]

__all__ = ["DependencyNotFound", "http_client", "require_dependency", "run_lifespan"]


class DependencyNotFound(LookupError):
    """No route of the app depends on the callable an override would be keyed on."""


# --8<-- [start:http_client]
@asynccontextmanager
async def http_client(
    app: FastAPI, sessionmaker: async_sessionmaker[AsyncSession], *,
    dependency: Callable[..., Any], lifespan: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """An AsyncClient calling ``app`` in this event loop; wherever the app depends on
    ``dependency``, requests get a session from ``sessionmaker``. Overrides restored on exit."""
    require_dependency(app, dependency)

    async def test_session() -> AsyncIterator[AsyncSession]:
        async with sessionmaker() as session:
            yield session

    saved = dict(app.dependency_overrides)
    app.dependency_overrides[dependency] = test_session
    try:
        async with run_lifespan(app, lifespan) as asgi_app:
            transport = httpx.ASGITransport(app=asgi_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
    finally:
        app.dependency_overrides.clear()
        app.dependency_overrides.update(saved)


@asynccontextmanager
async def run_lifespan(app: FastAPI, run: bool = True) -> AsyncIterator[Any]:
    """Startup on entry; shutdown on exit, as a server does, whatever the block raised. Yields
    the app to call, each request's scope with a copy of the state the lifespan yielded."""
    if not run:
        yield app
        return
    context = app.router.lifespan_context(app)
    state = await context.__aenter__() or {}

    async def app_with_state(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    try:
        yield app_with_state
    finally:
        await context.__aexit__(None, None, None)
# --8<-- [end:http_client]


# --8<-- [start:require_dependency]
def require_dependency(app: FastAPI, dependency: Callable[..., Any]) -> None:
    """Raise :class:`DependencyNotFound` unless a route of ``app`` depends on ``dependency``,
    directly or through other dependencies: the key FastAPI looks overrides up by."""
    routes = getattr(fastapi.routing, "iter_route_contexts", iter)(app.routes)  # 0.137.2+: flat
    found = [call for route in routes for call in _calls(getattr(route, "dependant", None))]
    if dependency not in found:
        names = ", ".join(sorted({_name(call) for call in found})) or "none"
        raise DependencyNotFound(
            f"no route of the app depends on {_name(dependency)}, so an override keyed on it "
            "would be ignored and the requests would use the app's own database. Key it on the "
            "function inside Depends(...), imported from where the routes import it. The "
            f"app's dependencies: {names}"
        )


def _calls(dependant: Any) -> Iterator[Callable[..., Any]]:
    """Every callable in a route's tree of dependencies (FastAPI's ``Dependant``)."""
    for sub in getattr(dependant, "dependencies", ()):
        yield sub.call
        yield from _calls(sub)
# --8<-- [end:require_dependency]


def _name(call: Any) -> str:
    if inspect.isfunction(call) or inspect.ismethod(call) or inspect.isclass(call):
        return f"{call.__module__}.{call.__qualname__}"
    if hasattr(call, "__metadata__"):  # SessionDep = Annotated[AsyncSession, Depends(...)]
        return f"Annotated[{call.__origin__.__qualname__}, ...] (an alias, not a dependency)"
    if callable(call):  # an instance: HTTPBearer()
        return f"{type(call).__module__}.{type(call).__qualname__}()"
    return repr(call)
