"""The chapters' tooling: ipytest configured for the recipes, and the helpers chapters share.

Each chapter starts with the single line::

    from recipes.notebook import setup; setup()

Afterwards a cell that starts with ``%%ipytest`` runs the tests defined in it with pytest and
the :mod:`recipes.plugin` fixtures (``db_session`` and friends). Each such cell is a pytest
session of its own: a ``scope="session"`` fixture lasts one cell, and the test database is
created and removed again within the cell.

The database is, in order of precedence: the ``db_url`` argument, the ``RECIPES_DB_URL``
environment variable (``python -m recipes run --db-url`` sets it for the kernel), or a
throwaway SQLite database in memory. One cell runs on another database with the comment
``# ipytest: addopts=on_database(URL)`` as the first line of its body, and on several with
``on_databases(URL, ...)``. :func:`postgres_url` and :func:`mysql_url` find a PostgreSQL and a
MySQL or MariaDB server for the cells that show one, whatever the chapter's database.

Mechanics a chapter need not show:

- pytest runs in a thread of its own (``run_in_thread=True``): pytest-asyncio starts event
  loops, which it cannot do in the kernel's main thread, where the kernel's loop runs.
- After every cell the garbage collector runs, and what Python says about the garbage (a
  coroutine that was never awaited, say) is printed under *that* cell, in one line, instead of
  in whichever later cell happens to collect it.
- ipytest 0.14's ``ipytest.config()`` turns coverage on unless it is passed
  ``coverage=False``; :func:`setup` configures everything, so chapters never call it.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import socket
import sys
import warnings
from typing import Any

import ipytest
from sqlalchemy import make_url
from sqlalchemy.exc import IntegrityError

from .databases import DEFAULT_URL, ENV_URL, describe, dialect_of, resolve_urls
from .janitor import EMBEDDED_POSTGRES, start_embedded

__all__ = [
    "MYSQL_URL", "PYTEST_OPTIONS", "REQUIRE_MYSQL", "mysql_url", "on_database", "on_databases",
    "postgres_url", "setup", "unique_violation",
]

MYSQL_URL = "RECIPES_MYSQL_URL"  # a MySQL or MariaDB server for the cells that need one
REQUIRE_MYSQL = "RECIPES_REQUIRE_MYSQL"  # "1": no server is an error, not a skipped column (CI)
LOCAL_MYSQL = "mysql+aiomysql://root@127.0.0.1:3306/test"  # tried when nothing names a server
DISPLAY_COLUMNS = 72  # what a chapter page's output area holds at 13 px, beside both sidebars

# Command-line options every %%ipytest cell runs with. They are complete on their own, so a
# chapter behaves the same inside this repository and in a learner's folder without its ini.
PYTEST_OPTIONS = [
    "-p", "recipes.plugin",
    "-q",
    "--color=yes",  # Jupyter and the docs render the colours; the runner strips them
    "-p", "no:randomly",  # chapters read top to bottom; random test order would scramble outputs
    "-p", "no:cacheprovider",  # no .pytest_cache next to the notebooks
    "-o", "asyncio_mode=strict",
    "-o", "asyncio_default_fixture_loop_scope=function",
    "-o", "asyncio_default_test_loop_scope=function",
    "-o", "recipes_metadata=recipes.demo.models:Base",
]


def setup(db_url: str | None = None) -> str:
    """Configure ipytest for this kernel and choose the database; return the URL(s) chosen.

    Prints one line naming the database (never its password). A bad URL raises
    :class:`recipes.databases.DatabaseConfigError` with a line that says what to do.
    """
    with warnings.catch_warnings():
        # Checking an embedded-postgres URL imports platformdirs, which warns where
        # XDG_RUNTIME_DIR is unset (containers, Binder); that is noise in every chapter.
        warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
        urls = resolve_urls([db_url] if db_url else None, os.environ.get(ENV_URL), DEFAULT_URL)
        # Each %%ipytest cell is a pytest session: one embedded server per kernel, not per cell.
        chosen = ",".join(_embedded_server() if url == EMBEDDED_POSTGRES else url for url in urls)
    shown = "; ".join(f"{dialect_of(url)} ({_describe(url)})" for url in urls)
    # The plugin reads the environment in every %%ipytest cell, so this decides for all of them.
    os.environ[ENV_URL] = chosen
    # run_in_thread: pytest-asyncio starts event loops of its own, which it cannot do on the
    # thread where the kernel's loop already runs. raise_on_error: a failing test fails the
    # cell, so a headless run notices. coverage=False: ipytest 0.14 would otherwise switch
    # coverage on at the next ipytest.config() call. display_columns: pytest's rules and
    # summary lines fit a code cell's width, in JupyterLab and on the site.
    ipytest.autoconfig(
        run_in_thread=True, raise_on_error=True, addopts=PYTEST_OPTIONS, coverage=False,
        display_columns=DISPLAY_COLUMNS,
    )
    _collect_garbage_after_each_cell()
    print(f"This chapter runs on: {shown}")
    return _Quiet(chosen)


def on_database(url: str) -> list[str]:
    """The options for one ``%%ipytest`` cell on another database: ``setup()``'s, plus ``url``.

    Use it as the first line of the cell body: ``# ipytest: addopts=on_database(PG_URL)``.
    (ipytest does not expand Python values on the magic line, but evaluates that comment.)
    """
    return [*PYTEST_OPTIONS, "--db-url", url]


def on_databases(*urls: str) -> list[str]:
    """The options for one ``%%ipytest`` cell on several databases: every database test runs
    once on each, with the dialect in its id (``[sqlite]``, ``[postgresql]``, ``[mysql]``)."""
    return [*PYTEST_OPTIONS, *(option for url in urls for option in ("--db-url", url))]


def postgres_url() -> str:
    """A PostgreSQL URL with the asyncpg driver, for cells that need PostgreSQL whatever the
    chapter's database is: the chapter's own server if it is PostgreSQL, else the kernel's
    embedded server, started on first use and removed when the kernel exits.

    asyncpg, whatever driver the chapter's URL names: the cells that use this show asyncpg's
    own behaviour and messages. The password is included (``str()`` of a URL would hide it).
    """
    for url in os.environ.get(ENV_URL, "").split(","):  # as setup() resolved it
        if url.strip() and dialect_of(url.strip()) == "postgresql":
            parsed = make_url(url.strip()).set(drivername="postgresql+asyncpg")
            return parsed.render_as_string(hide_password=False)
    return _embedded_server()


def mysql_url() -> str | None:
    """A MySQL or MariaDB URL for the cells that show them, or None where there is no server.

    In order: the chapter's own database if it is MySQL; ``$RECIPES_MYSQL_URL``; else
    ``mysql+aiomysql://root@127.0.0.1:3306/test`` if a server answers there. None when none
    does, unless ``RECIPES_REQUIRE_MYSQL=1`` (CI), where that raises :class:`RuntimeError`.
    """
    for url in os.environ.get(ENV_URL, "").split(","):  # as setup() resolved it
        if url.strip() and dialect_of(url.strip()) == "mysql":
            return url.strip()
    if os.environ.get(MYSQL_URL, "").strip():
        return os.environ[MYSQL_URL].strip()
    if _mysql_answers(LOCAL_MYSQL):
        return LOCAL_MYSQL
    if os.environ.get(REQUIRE_MYSQL) == "1":
        local = make_url(LOCAL_MYSQL)
        raise RuntimeError(
            f"{REQUIRE_MYSQL}=1, but no MySQL or MariaDB server answered at {local.host}:{local.port}: "
            f"start one, or name it in {MYSQL_URL}=mysql+aiomysql://USER:PASSWORD@HOST:PORT/DB"
        )
    return None


def _mysql_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a MySQL server greets us at the URL's host and port (it speaks first: a
    handshake packet whose fifth byte is the protocol version, 10)."""
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 3306), timeout) as sock:
            sock.settimeout(timeout)
            greeting = sock.recv(64)
    except OSError:
        return False
    return len(greeting) > 4 and greeting[4] in (10, 0xFF)  # 0xFF: an error, from a server


def unique_violation(table_column: str = "users.email") -> IntegrityError:
    """The IntegrityError a unique violation raises, made by hand: for a mock to raise on cue.

    Only the type and the message look real; a real one comes from a real database.
    """
    cause = Exception(f"UNIQUE constraint failed: {table_column}")
    return IntegrityError(f"INSERT INTO {table_column.split('.')[0]} ...", {}, cause)


_EMBEDDED: list[str] = []


def _embedded_server() -> str:
    """The URL of this kernel's embedded PostgreSQL, started on first use, stopped at exit."""
    if not _EMBEDDED:
        with warnings.catch_warnings():  # platformdirs, as above
            warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
            url, stop = start_embedded()
        atexit.register(stop)
        _EMBEDDED.append(url.render_as_string(hide_password=False))
    return _EMBEDDED[0]


def _collect_garbage_after_each_cell() -> None:
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:  # setup() outside IPython: nothing to hook
        return
    if _report_garbage not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", _report_garbage)


def _report_garbage(*_: Any) -> None:
    """Collect now, and say in one line what Python warns about while it collects."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)  # the same warning again, in a new cell
        gc.collect()
    for warning in caught:
        print(
            f"(collected after this cell) {warning.category.__name__}: {warning.message}",
            file=sys.stderr,
        )


class _Quiet(str):
    """A str that IPython does not echo: ``setup()`` ends the first cell, and the line printed
    above already says everything its value would."""

    def _ipython_display_(self) -> None:
        pass


def _describe(url: str) -> str:
    # describe() says "URL (what it is)"; within our parentheses "URL, what it is" reads better.
    return re.sub(r"^(\S+) \((.*)\)$", r"\1, \2", describe(url))
