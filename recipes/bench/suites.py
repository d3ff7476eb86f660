"""Whole suites through pytest: N tests that each insert and commit one row, per strategy.

Each suite is a fresh pytest process in a temporary project, run with N tests and with N/10
(the *base*). What each further test costs is the slope, ``(wall(N) - wall(N/10)) / (N - N/10)``,
minus the same slope of the suite whose tests touch no database, on the same loop scope:
interpreter start, imports, creating the test database and the schema are in both runs and
cancel out.

The machine is shared and noisy, and noise only ever adds time, so each wall time is the
*minimum* of ``runs`` runs, and the runs are interleaved: every run executes every suite, at
both sizes, in a new random order, after one untimed warm-up of each. The *spread* says how
far the figure moves from run to run: the same figure computed from the even-numbered runs
and from the odd-numbered ones, apart. A difference smaller than the spread is not a result.

Beside the wall time, the CPU time of the pytest process (its own work: fixtures, SQLAlchemy,
the driver; not the server's), which a busy machine disturbs much less.
"""

from __future__ import annotations

import importlib.util
import os
import random
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..databases import provision

__all__ = ["SUITES", "SuiteResult", "base_size", "run_suites"]

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
    wall_s: float  # the N-test run, minimum of the runs
    per_test_ms: float | None  # marginal, above the no-database suite on the same loop scope
    spread_ms: float | None = None  # between the figures of the even and of the odd runs
    cpu_ms: float | None = None  # the pytest process's CPU time per test, above no database
    runs: int = 1


def _uses_plugin(suite: Suite) -> bool:
    return "recipes.plugin" in suite.conftest


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
    ]
    if _uses_plugin(suite):
        ini.append("recipes_metadata = recipes.demo.models:Base")
    if suite.ini == "sqla":
        ini += ["sqla_metadata = recipes.demo.models:Base", f"sqla_url = {url}"]
    (folder / "pytest.ini").write_text("\n".join(ini) + "\n")


def _run_one(suite: Suite, url: str, tests: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the pytest process) of one run of ``suite``."""
    if suite.ini == "sqla":  # pytest-sqla refuses a database holding tables it did not create
        database = provision(url)
        try:
            return _run_in_project(suite, database.url.render_as_string(hide_password=False), tests)
        finally:
            database.close()
    return _run_in_project(suite, url, tests)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_in_project(suite: Suite, url: str, tests: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="recipes-bench-") as folder:
        _write_project(Path(folder), suite, url, tests)
        env = {**os.environ, "RECIPES_DB_URL": url}
        # Not the plugins these suites do not use: pytest-randomly (its reseeding), the cache,
        # Faker's (a second to import, and a fixture in every test: noise in every suite)
        plugins = ["-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker"]
        if suite.ini != "sqla":
            plugins += ["-p", "no:sqla"]
        if not _uses_plugin(suite):  # as in a project without this package: none of its hooks
            plugins += ["-p", "no:recipes"]
        cpu = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", *plugins],
            cwd=folder, env=env, capture_output=True, text=True, check=False,
        )
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"suite {suite.name} ({suite.loop} loop) failed: {' | '.join(tail)}")
    return wall, cpu


def base_size(tests: int) -> int:
    """The number of tests of the base run, whose wall time the N-test run's is compared with."""
    return max(1, tests // 10)


def run_suites(
    backend: str,
    url: str,
    tests: int,
    runs: int = 5,
    only: Iterable[str] = (),
    progress: Callable[[str], None] = lambda line: None,
    warmup: bool = True,
) -> list[SuiteResult]:
    """Run every available suite (or those named in ``only``, with the no-database suites)
    with N and N/10 tests, ``runs`` times, interleaved; figures from the minimum wall times.
    """
    wanted = set(only)
    suites = [
        s for s in SUITES
        if (not s.needs or importlib.util.find_spec(s.needs))
        and (not wanted or not s.fixture or s.name in wanted)
    ]
    small = base_size(tests)
    if small >= tests:
        raise ValueError(f"--tests must be at least 2 (got {tests})")
    samples: dict[tuple[Suite, int], list[tuple[float, float]]] = {
        (s, n): [] for s in suites for n in (small, tests)
    }
    for suite in suites if warmup else []:  # untimed: bytecode caches, the page cache, the server
        _run_one(suite, url, min(small, 20))
    for run in range(runs):
        order = list(samples)
        random.shuffle(order)  # interleaved: drift in the machine hits every suite alike
        progress(f"{backend}: run {run + 1} of {runs}, {len(order)} suites")
        for suite, n in order:
            samples[(suite, n)].append(_run_one(suite, url, n))

    def per_test(which: list[int], field: int) -> dict[Suite, float]:
        """ms per test above no database, from the minimum of the runs in ``which``."""
        slope = {
            s: (min(samples[(s, tests)][i][field] for i in which)
                - min(samples[(s, small)][i][field] for i in which)) / (tests - small)
            for s in suites
        }
        baseline = {s.loop: slope[s] for s in suites if not s.fixture}
        return {s: (slope[s] - baseline[s.loop]) * 1000 for s in suites if s.fixture}

    everything = list(range(runs))
    wall, cpu = per_test(everything, 0), per_test(everything, 1)
    spread: dict[Suite, float] = {}
    if runs >= 2:
        even, odd = per_test(everything[0::2], 0), per_test(everything[1::2], 0)
        spread = {s: abs(even[s] - odd[s]) for s in even}
    return [
        SuiteResult(
            backend, s.name, s.loop, tests,
            min(w for w, _ in samples[(s, tests)]),
            wall.get(s), spread.get(s), cpu.get(s), runs,
        )
        for s in suites
    ]
