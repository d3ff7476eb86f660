"""The project's own suite: the recipes plugin, on every configured database.

Isolation claims are checked through ``observe``, a separate engine and connection outside
the test's transaction, never through the session under test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import URL, make_url, text

from recipes.databases import DEFAULT_URL, EMBEDDED_POSTGRES, dialect_of, make_engine, provision

pytest_plugins = ["recipes.plugin", "pytester"]


@pytest.hookimpl(trylast=True)  # after recipes.plugin has read the configuration
def pytest_configure(config: pytest.Config) -> None:
    from recipes import plugin  # imported here: pytest must load it as a plugin first

    # In CI a PostgreSQL that is not configured is a failure, never a skip.
    if os.environ.get("RECIPES_REQUIRE_POSTGRES") == "1" and not any(
        dialect_of(raw) == "postgresql" for raw in config.stash[plugin._URLS]
    ):
        raise pytest.UsageError("RECIPES_REQUIRE_POSTGRES=1 but no PostgreSQL URL is configured")
    if os.environ.get("RECIPES_REQUIRE_MYSQL") == "1" and not any(
        dialect_of(raw) == "mysql" for raw in config.stash[plugin._URLS]
    ):
        raise pytest.UsageError("RECIPES_REQUIRE_MYSQL=1 but no MySQL or MariaDB URL is configured")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # One CI job checks the site and Binder for all: the others say where, and skip them.
    surfaces = os.environ.get("RECIPES_SKIP_SURFACES")
    _skip_where(surfaces and f"RECIPES_SKIP_SURFACES: {surfaces}", items,
                lambda item: item.get_closest_marker("surfaces"))
    # The chapters on the database servers: every job runs them all on the default (the
    # workbook), and its share of them on PostgreSQL and MariaDB, which RECIPES_SERVER_CHAPTERS
    # names (patterns of their test ids, "0[0-7]_*-postgresql *-mysql"): the rest skip, saying so.
    share = os.environ.get("RECIPES_SERVER_CHAPTERS")
    if share is not None:
        reason = f"RECIPES_SERVER_CHAPTERS: another CI job runs it (this one runs {share or 'none'})"
        _skip_where(reason, items, lambda item: _chapter_url(item) not in (None, DEFAULT_URL)
                    and not any(fnmatch(item.callspec.id, pattern) for pattern in share.split()))


def _skip_where(reason: str | None, items: list[pytest.Item], chosen: Callable[[pytest.Item], object]) -> None:
    """Skip the chosen items with ``reason``, if there is one."""
    if reason:
        for item in items:
            if chosen(item):
                item.add_marker(pytest.mark.skip(reason=reason))


def _chapter_url(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("chapter_db_url") if callspec else None


@pytest_asyncio.fixture
async def observe(db_url: URL) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    """Count a table's rows through a fresh connection of a separate engine."""
    engine = make_engine(db_url)

    async def count(table: str = "users") -> int:
        async with engine.connect() as connection:
            return await connection.scalar(text(f"SELECT count(*) FROM {table}"))

    yield count
    await engine.dispose()


@pytest.fixture(scope="session")
def pg_server_url(request: pytest.FixtureRequest) -> URL:
    """A URL naming an existing database on the PostgreSQL server this run uses, for tests
    that start pytest in a subprocess (they create their own test database beside it)."""
    from recipes import plugin

    raws = [raw for raw in request.config.stash[plugin._URLS] if dialect_of(raw) == "postgresql"]
    if not raws:
        pytest.skip("no PostgreSQL configured (set RECIPES_DB_URL or --db-url)")
    raw = raws[0]
    if raw != EMBEDDED_POSTGRES:
        return make_url(raw)
    databases = request.config.stash[plugin._DATABASES]
    if raw not in databases:
        databases[raw] = provision(raw)
    return databases[raw].url.set(database="postgres")


@pytest.fixture(scope="session")
def mysql_server_url(request: pytest.FixtureRequest) -> URL:
    """A URL naming an existing database on the MySQL or MariaDB server this run uses, for
    tests that start pytest in a subprocess or create databases beside it."""
    from recipes import plugin

    raws = [raw for raw in request.config.stash[plugin._URLS] if dialect_of(raw) == "mysql"]
    if not raws:
        pytest.skip("no MySQL configured (set RECIPES_DB_URL or --db-url)")
    return make_url(raws[0])


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in a subprocess in a fresh project that loads only the plugin."""
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    pytester.makeconftest('pytest_plugins = ["recipes.plugin"]\n')
    pytester.makeini(
        "[pytest]\n"
        "asyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "recipes_metadata = recipes.demo.models:Base\n"
    )

    def run(*args: str) -> pytest.RunResult:
        # Faker's pytest plugin (from factory_boy) costs 1.6 s of CPU per start; pytest-sqla
        # (the benchmark's peer) adds fixtures: neither belongs in these projects.
        return pytester.runpytest_subprocess(
            "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:sqla", *args
        )

    return run



@pytest.fixture(scope="session")
def executed_chapters() -> Path:
    """``docs/chapters/``, each chapter there executed from the notebook and the ``recipes``
    package as they are now, and passing: what ``python -m recipes run`` writes, on the
    default database.

    A copy that is missing, stale (its ``recipes.stamp`` is not the current
    :func:`~recipes.rendering.source_stamp`) or failed (``recipes.problems``) is executed again
    first, so a fresh clone gets them in about three minutes and a run after the workbook's
    command gets them at once.
    """
    import json
    from unittest import mock

    from recipes.rendering import source_stamp
    from recipes.runner import DOCS_CHAPTERS, default_notebooks, execute_notebook

    def fresh(notebook: Path) -> bool:
        copy = DOCS_CHAPTERS / notebook.name
        if not copy.is_file():
            return False
        marks = json.loads(copy.read_text()).get("metadata", {}).get("recipes", {})
        return marks.get("stamp") == source_stamp(notebook) and marks.get("problems") == []

    problems = []
    from filelock import FileLock  # under pytest-xdist: one worker executes them, the others wait

    lock = DOCS_CHAPTERS.parents[1] / ".cache" / "chapters.lock"  # (.cache/ is not committed)
    lock.parent.mkdir(exist_ok=True)
    with FileLock(lock), mock.patch.dict(os.environ):
        os.environ.pop("RECIPES_DB_URL", None)  # the workbook's default, as the site shows it
        for notebook in [n for n in default_notebooks() if not fresh(n)]:
            result = execute_notebook(notebook, output_dir=DOCS_CHAPTERS)
            problems += [f"{notebook.name}: {problem}" for problem in result.problems]
    assert not problems, "the chapters do not run:\n" + "\n".join(problems)
    return DOCS_CHAPTERS
