"""Whole suites through pytest: N tests that each insert and commit one row, per strategy.

Each suite is a fresh pytest process in a temporary project, run with N and with 2N tests; the
difference of the two wall times over N, minus the same for tests with no database on the
same loop scope, is what each further test costs a user of the strategy. Suites run
in a new random order in each of ``repeat`` rounds, after an untimed warm-up; medians reported.
"""

from __future__ import annotations

import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from ..databases import provision

__all__ = ["SUITES", "SuiteResult", "run_suites"]

_BODY = """
@pytest.mark.asyncio{marker}
@pytest.mark.parametrize("n", range({n}))
async def test_insert_and_commit({fixture}, n):
{body}
"""
_INSERT = (
    "    {fixture}.add(User(email=f'u{{n}}@example.com', name='u'))\n"
    "    await {fixture}.commit()"
)

_INLINE_CONFTEST = """
import pytest, pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from recipes.demo.models import Base
from recipes.sqlite import enable_sqlite_fixes

@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine():
    engine = create_async_engine(URL)
    enable_sqlite_fixes(engine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()

@pytest_asyncio.fixture(loop_scope="session")
async def session(engine):
    async with engine.connect() as connection:
        transaction = await connection.begin()
        async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint",
                                expire_on_commit=False) as session:
            yield session
        await transaction.rollback()
"""

_ENGINE_CONFTEST = _INLINE_CONFTEST.split("@pytest_asyncio.fixture(loop_scope")[0]


def _strategy_conftest(name: str) -> str:
    """A conftest whose ``session`` fixture is one of :mod:`recipes.bench.strategies`, so the
    suites measure exactly what the in-process table measures."""
    return _ENGINE_CONFTEST + f"""
from recipes.bench.strategies import {name} as strategy

@pytest_asyncio.fixture(loop_scope="session")
async def session(engine):
    async with strategy(engine) as session:
        yield session
"""


@dataclass(frozen=True)
class Suite:
    name: str
    loop: str  # "function" or "session": the tests' loop scope
    fixture: str  # what the test requests ("" for none)
    conftest: str
    ini: str = ""
    needs: str = ""  # a module that must be importable


SUITES = [
    Suite("no database", "function", "", ""),
    Suite("no database", "session", "", ""),
    Suite("inline savepoint recipe", "session", "session", _INLINE_CONFTEST),
    Suite("recipes db_session", "function", "db_session", 'pytest_plugins = ["recipes.plugin"]\n'),
    Suite("recipes db_session", "session", "db_session", 'pytest_plugins = ["recipes.plugin"]\n'),
    Suite("truncate", "session", "session", _strategy_conftest("truncate")),
    Suite("drop + create", "session", "session", _strategy_conftest("drop_create")),
    Suite("pytest-sqla", "function", "sqla_async_session", "", "sqla", "pytest_sqla"),
    Suite("pytest-sqla", "session", "sqla_async_session", "", "sqla", "pytest_sqla"),
]


@dataclass
class SuiteResult:
    backend: str
    suite: str
    loop: str
    tests: int
    wall_s: float
    per_test_ms: float | None  # marginal, above the no-database suite on the same loop scope


def _write_project(folder: Path, suite: Suite, url: str, tests: int) -> None:
    marker = '(loop_scope="session")' if suite.loop == "session" else ""
    body = _INSERT.format(fixture=suite.fixture) if suite.fixture else "    pass"
    header = "import pytest\nfrom recipes.demo.models import User\n"
    test = header + _BODY.format(marker=marker, n=tests, fixture=suite.fixture or "request", body=body)
    (folder / "test_suite.py").write_text(test)
    (folder / "conftest.py").write_text(textwrap.dedent(suite.conftest).replace("URL", repr(url)))
    ini = [
        "[pytest]",
        "asyncio_mode = strict",
        f"asyncio_default_fixture_loop_scope = {suite.loop}",
        f"asyncio_default_test_loop_scope = {suite.loop}",
        "recipes_metadata = recipes.demo.models:Base",
    ]
    if suite.ini == "sqla":
        ini += ["sqla_metadata = recipes.demo.models:Base", f"sqla_url = {url}"]
    (folder / "pytest.ini").write_text("\n".join(ini) + "\n")


def _run_one(suite: Suite, url: str, tests: int) -> float:
    if suite.ini == "sqla":  # pytest-sqla refuses a database holding tables it did not create
        database = provision(url)
        try:
            return _run_in_project(suite, database.url.render_as_string(hide_password=False), tests)
        finally:
            database.close()
    return _run_in_project(suite, url, tests)


def _run_in_project(suite: Suite, url: str, tests: int) -> float:
    with tempfile.TemporaryDirectory(prefix="recipes-bench-") as folder:
        _write_project(Path(folder), suite, url, tests)
        env = {**os.environ, "RECIPES_DB_URL": url}
        plugins = ["-p", "no:randomly", "-p", "no:cacheprovider"]
        if suite.ini != "sqla":
            plugins += ["-p", "no:sqla"]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", *plugins],
            cwd=folder, env=env, capture_output=True, text=True, check=False,
        )
        wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"suite {suite.name} ({suite.loop} loop) failed: {' | '.join(tail)}")
    return wall


def run_suites(backend: str, url: str, tests: int, repeat: int = 3) -> list[SuiteResult]:
    """Run every available suite with N and 2N tests, ``repeat`` times, interleaved.

    The cost per test is the slope, ``(wall(2N) - wall(N)) / N``, minus the no-database
    suite's slope on the same loop scope: fixed costs (interpreter start, imports, creating
    the test database and the schema) cancel out, for every strategy alike.
    """
    suites = [s for s in SUITES if not s.needs or importlib.util.find_spec(s.needs)]
    walls: dict[tuple[Suite, int], list[float]] = {(s, n): [] for s in suites for n in (tests, 2 * tests)}
    for suite in suites:  # warm-up, untimed: bytecode caches, the OS page cache, the server
        _run_one(suite, url, min(tests, 20))
    for _ in range(repeat):
        order = list(walls)
        random.shuffle(order)  # interleaved: drift in the machine hits every suite alike
        for suite, n in order:
            walls[(suite, n)].append(_run_one(suite, url, n))
    median = {key: statistics.median(values) for key, values in walls.items()}
    slope = {s: (median[(s, 2 * tests)] - median[(s, tests)]) / tests for s in suites}
    baseline = {s.loop: slope[s] for s in suites if not s.fixture}
    return [
        SuiteResult(
            backend, s.name, s.loop, tests, median[(s, tests)],
            None if not s.fixture else (slope[s] - baseline[s.loop]) * 1000,
        )
        for s in suites
    ]
