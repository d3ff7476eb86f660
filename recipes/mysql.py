"""The MySQL and MariaDB janitor: throwaway test databases on a server, usable without pytest.

:func:`create_test_database` runs ``CREATE DATABASE <name>_test_<pid>`` beside the database a
URL names (never in it), marks it as ours, and returns its URL and a function that drops it.
A marked database whose run died on this host is dropped first; an existing database it did
not mark is never touched. Driver errors become one :class:`DatabaseConfigError` line that says
what to do, without the password.

The driver: ``mysql+aiomysql://`` (the ``mysql`` extra); ``mysql+asyncmy://`` works the same.
Measured on this project's machine (MariaDB 10.11, SQLAlchemy 2.1.9 and 2.0.58, aiomysql 0.3.2,
asyncmy 0.2.18): both install from wheels on CPython 3.11 to 3.13 (aiomysql is pure Python on
PyMySQL, asyncmy compiled per Python and platform); both pass the same savepoint, error-code
and ``KILL`` probes; a test's connection, savepoint, insert, select and rollback cost the same
on both (1.78 against 1.80 ms), as does a statement (164 to 199 µs, within the noise). What
tells them apart is where the server's warnings go: aiomysql raises them as Python warnings,
which pytest collects and ``filterwarnings`` controls; asyncmy logs them (logger ``asyncmy``),
which without logging configured prints them on stderr. Hence aiomysql.

The mark: MySQL has no database comments (MariaDB has them only from 10.5), and a marker
*table* would show in the test database wherever tables are reflected (``alembic check``,
``MetaData.reflect``). So the mark is an empty stored procedure, ``recipes_test_database``,
whose comment says ``recipes test database; pid=...; host=...``: it lives and dies with the
database, on every MySQL and MariaDB version, tables never see it, and
``information_schema.ROUTINES`` lists it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from .janitor import DatabaseConfigError, process_alive, run_coroutine
from .runs import Run

__all__ = ["create_test_database", "drop_run_databases", "mark_of"]

_MARK = "recipes test database"
_MARKER = "recipes_test_database"  # the marker procedure's name
_UNREACHABLE = (2002, 2003, 2005, 2006, 2013)  # no socket, refused, unknown host, gone, lost
_DENIED = (1045, 1698)  # wrong password; unix_socket/plugin authentication refused
_NO_PRIVILEGE = (1044, 1142, 1227, 1370)  # CREATE, CREATE ROUTINE, DROP not granted


def _where(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 3306}"


@contextmanager
def _server_errors(url: URL, name: str) -> Iterator[None]:
    """Turn a driver's exception into one line that says what to do."""
    where, user = _where(url), url.username or "(default user)"
    try:
        yield
    except DatabaseConfigError:
        raise
    except (OSError, asyncio.TimeoutError) as exc:
        raise DatabaseConfigError(
            f"cannot reach MySQL at {where} ({type(exc).__name__}): start the server, or fix "
            "the host and port"
        ) from None
    except DBAPIError as exc:
        args = getattr(exc.orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        detail = str(args[1] if len(args) > 1 else exc.orig).splitlines()[0]
        if code in _UNREACHABLE:
            message = f"cannot reach MySQL at {where} ({detail}): start the server, or fix the host and port"
        elif code in _DENIED:
            message = f"MySQL at {where} refused user {user!r}: {detail}; check the URL's user and password"
        elif code == 1049:
            message = (
                f"database {url.database!r} does not exist on {where}: name one that does "
                "(for example mysql); tests run in a new database created beside it"
            )
        elif code in _NO_PRIVILEGE:
            message = (
                f"user {user!r} may not create the test database {name!r} on {where} ({detail}): "
                f"GRANT ALL ON `{url.database}\\_test\\_%`.* TO {user!r}, or connect as a user that may"
            )
        else:
            message = f"MySQL at {where} failed: {detail}"
        raise DatabaseConfigError(message) from None


def create_test_database(url: URL, number: int = 1, run: Run | None = None) -> tuple[URL, Callable[[], None]]:
    """Create the throwaway database beside the one ``url`` names; return its URL and a drop.

    ``number`` tells apart several URLs of one run that name the same database; ``run`` names
    it for an xdist worker (:mod:`recipes.runs`). Not kept by ``--reuse-db``: on MySQL every
    run builds its databases anew (there is no template to copy a schema from).
    """
    run = Run(run.owner, run.worker) if run else Run()
    if not url.database:
        raise DatabaseConfigError(
            f"{url.render_as_string(hide_password=True)} names no database: name one that "
            "exists (mysql+aiomysql://user@host/app); tests run in a new database created beside it"
        )
    name = run.name(url.database, number, limit=64)

    async def create() -> None:
        async with _admin(url) as connection:
            await _drop_stale(connection)
            exists = await connection.scalar(
                text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"),
                {"name": name},
            )
            if exists:  # never reuse or drop a database a live run owns
                mark = await mark_of(connection, name)
                owner = "another test run" if mark else "someone else"
                raise DatabaseConfigError(
                    f"database {name!r} already exists on {_where(url)}, created by {owner}: "
                    "it is left alone; drop or rename it yourself"
                )
            quoted = _quote(name)
            await connection.execute(text(f"CREATE DATABASE {quoted}"))
            mark = run.mark()
            try:
                await connection.execute(
                    text(f"CREATE PROCEDURE {quoted}.{_MARKER}() COMMENT :mark BEGIN END"),
                    {"mark": mark},
                )
            except BaseException:  # unmarked, it would never be cleaned up: not left behind
                await connection.execute(text(f"DROP DATABASE {quoted}"))
                raise

    async def drop() -> None:
        async with _admin(url) as connection:
            await _drop(connection, name)

    with _server_errors(url, name):
        run_coroutine(create)
    return url.set(database=name), lambda: run_coroutine(drop)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _admin:
    """An AUTOCOMMIT connection to the database the URL names (which says it exists)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_async_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10}
        )

    async def __aenter__(self) -> AsyncConnection:
        self.connection = await self.engine.connect()
        return self.connection

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()
        await self.engine.dispose()


async def mark_of(connection: AsyncConnection, name: str) -> dict[str, str] | None:
    """The fields of the mark on database ``name`` (``pid``, ``host``), None if it has none."""
    comment = await connection.scalar(
        text(
            "SELECT ROUTINE_COMMENT FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = :name "
            "AND ROUTINE_NAME = :marker AND ROUTINE_TYPE = 'PROCEDURE'"
        ),
        {"name": name, "marker": _MARKER},
    )
    if not comment or not comment.startswith(_MARK):
        return None
    return dict(part.strip().split("=", 1) for part in comment.split(";")[1:] if "=" in part)


def drop_run_databases(server: URL, owner: int) -> None:
    """Drop every database on the server that the run with pid ``owner`` marked (on this
    host): a crashed xdist worker's, which its worker never dropped."""

    async def drop() -> None:
        async with _admin(server) as connection:
            for name in await _marked(connection):
                fields = await mark_of(connection, name) or {}
                if fields.get("pid") == str(owner) and fields.get("host") == socket.gethostname():
                    await _drop(connection, name)

    with _server_errors(server, "(this run's)"):
        run_coroutine(drop)


async def _marked(connection: AsyncConnection) -> list[str]:
    rows = await connection.execute(
        text(
            "SELECT ROUTINE_SCHEMA FROM information_schema.ROUTINES WHERE ROUTINE_NAME = :marker "
            "AND ROUTINE_TYPE = 'PROCEDURE' AND ROUTINE_COMMENT LIKE :mark"
        ),
        {"marker": _MARKER, "mark": f"{_MARK};%"},
    )
    return [name for (name,) in rows.all()]


async def _drop_stale(connection: AsyncConnection) -> None:
    """Drop marked databases whose run, on this host, is no longer alive."""
    for name in await _marked(connection):
        fields = await mark_of(connection, name) or {}
        if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
            continue
        if not process_alive(int(fields["pid"])):
            await _drop(connection, name)


async def _drop(connection: AsyncConnection, name: str) -> None:
    """``DROP DATABASE``, ending first the connections still using it: MySQL has no ``WITH
    (FORCE)``, and a transaction left open on one of its tables would make the drop wait."""
    rows = await connection.execute(
        text(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = :name "
            "AND ID <> CONNECTION_ID()"
        ),
        {"name": name},
    )
    for (pid,) in rows.all():
        try:
            await connection.execute(text(f"KILL {int(pid)}"))
        except DBAPIError:  # gone already (1094 unknown thread)
            pass
    exists = await connection.scalar(
        text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"), {"name": name}
    )
    if exists:  # not IF EXISTS: its note would reach the caller as a warning
        try:
            await connection.execute(text(f"DROP DATABASE {_quote(name)}"))
        except DBAPIError as exc:  # 1008: dropped meanwhile (another worker's janitor, say)
            if getattr(exc.orig, "args", (None,))[0] != 1008:
                raise
