"""The first cell of every chapter: ipytest configured for the recipes, and the database chosen.

Each chapter starts with the single line::

    from recipes.notebook import setup; setup()

Afterwards a cell that starts with ``%%ipytest`` runs the tests defined in it with pytest and
the :mod:`recipes.plugin` fixtures (``db_session`` and friends). Each such cell is a pytest
session of its own: a ``scope="session"`` fixture lasts one cell, and the test database is
created and removed again within the cell.

The database is, in order of precedence: the ``db_url`` argument, the ``RECIPES_DB_URL``
environment variable (``python -m recipes run --db-url`` sets it for the kernel), or a
throwaway SQLite database in memory.
"""

from __future__ import annotations

import atexit
import os
import re
import warnings

import ipytest

from .databases import DEFAULT_URL, describe, dialect_of, resolve_urls
from .janitor import EMBEDDED_POSTGRES, start_embedded

__all__ = ["PYTEST_OPTIONS", "setup"]

# The variable recipes.plugin reads. Not imported from there: a plugin imported before pytest
# loads it with -p cannot have its asserts rewritten, and pytest warns about it in the first cell.
ENV_URL = "RECIPES_DB_URL"

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
    # cell, so a headless run notices.
    ipytest.autoconfig(run_in_thread=True, raise_on_error=True, addopts=PYTEST_OPTIONS)
    print(f"This chapter runs on: {shown}")
    return _Quiet(chosen)


_EMBEDDED: list[str] = []


def _embedded_server() -> str:
    """The URL of this kernel's embedded PostgreSQL, started on first use, stopped at exit."""
    if not _EMBEDDED:
        url, stop = start_embedded()
        atexit.register(stop)
        _EMBEDDED.append(url.render_as_string(hide_password=False))
    return _EMBEDDED[0]


class _Quiet(str):
    """A str that IPython does not echo: ``setup()`` ends the first cell, and the line printed
    above already says everything its value would."""

    def _ipython_display_(self) -> None:
        pass


def _describe(url: str) -> str:
    # describe() says "URL (what it is)"; within our parentheses "URL, what it is" reads better.
    return re.sub(r"^(\S+) \((.*)\)$", r"\1, \2", describe(url))
