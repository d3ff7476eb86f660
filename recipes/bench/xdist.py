"""pytest-xdist, measured: one suite of database tests run with 0, 1 and 2 workers.

The suite is N tests that each insert and commit a row through the plugin's ``db_session``
on a session-scoped loop, in a fresh pytest process per run (``python -m pytest -n K``). The
figure is the wall time of the whole command: interpreter start, collection, starting the
workers, building each worker's database (once per run, from a template:
:mod:`recipes.workers`), the tests, and the teardown. Each configuration's figure is the
*minimum* of ``runs`` runs, interleaved in a new random order every run, so that the
machine's drift hits each alike; the spread is how far the minimum of the even-numbered runs
and of the odd-numbered ones lie apart.

Where the time goes, from the same runs (the one whose wall time counts): the CPU seconds of
the pytest process (the controller, or the only process under ``-n 0``), of its workers
together, and of the rest of the machine (Linux: the database server, and whatever else ran),
with :mod:`recipes.bench.cpu`. On two cores, two workers gain only what the cores have left:
``cores`` is the machine's busy CPU seconds over the wall time.

``-n 0`` is xdist's way of saying "no workers": the tests run in the pytest process, as
without xdist. ``-n 1`` pays for a worker without gaining one: the difference to ``-n 0`` is
what distributing costs. On a machine with 2 cores that the database server shares, ``-n 2``
cannot be twice as fast: the server's work, the controller and the second interpreter's start
take their share.

:func:`reuse_timings` measures ``--reuse-db`` the same way, on a schema built by the demo's
Alembic migrations (where reuse pays: a migration run costs far more than ``create_all``).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import cpu

__all__ = ["WorkersResult", "reuse_timings", "run_workers", "write_suite"]

_TEST = """
import pytest
from recipes.demo.models import User

@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("n", range({tests}))
async def test_insert_and_commit(db_session, n):
    db_session.add(User(email=f"u{{n}}@example.com", name="u"))
    await db_session.commit()
"""
_INI = """[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
{schema}
"""
_SCHEMAS = {
    "create_all": "recipes_metadata = recipes.demo.models:Base",
    "alembic": f"recipes_schema = alembic\nrecipes_alembic_config = {Path(__file__).parents[1] / 'demo' / 'migrations' / 'alembic.ini'}",
}
# Not the plugins the suite does not use (as recipes.bench.suites): their start-up is noise.
_PLUGINS = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:sqla")


@dataclass
class WorkersResult:
    backend: str
    workers: int  # 0: no workers (-n 0)
    tests: int
    wall_s: float  # the whole pytest command, minimum of the runs
    spread_s: float | None  # between the minimum of the even and of the odd runs
    runs: int
    speedup: float | None = None  # wall time of -n 0 over this one's
    # CPU seconds in the run whose wall time counts (see the module docstring); None where unknown
    pytest_cpu_s: float | None = None  # the process started: the controller, or the only one
    workers_cpu_s: float | None = None  # the workers together
    rest_cpu_s: float | None = None  # the rest of the machine: the database server, and others
    cores: float | None = None  # the machine's busy CPU seconds over the wall time


def write_suite(folder: Path, tests: int, schema: str = "create_all") -> Path:
    """A pytest project of ``tests`` database tests in ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_suite.py").write_text(_TEST.format(tests=tests))
    (folder / "pytest.ini").write_text(_INI.format(schema=_SCHEMAS[schema]))
    (folder / "conftest.py").write_text("")
    return folder


@dataclass
class _Sample:
    wall: float
    parts: dict[str, float]  # CPU seconds by process: "pytest", "gw0", ...
    busy: float | None  # the machine's busy CPU seconds meanwhile


def _run(folder: Path, url: str, *args: str) -> _Sample:
    with tempfile.TemporaryDirectory(prefix="recipes-cpu-") as parts:
        env = {**os.environ, "RECIPES_DB_URL": url, cpu.ENV: parts}
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            env.pop(name, None)
        busy, start = cpu.machine_busy(), time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *_PLUGINS, "-p", cpu.__name__, *args],
                              cwd=folder, env=env, capture_output=True, text=True, check=False)
        wall, after = time.perf_counter() - start, cpu.machine_busy()
        if done.returncode != 0:
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"pytest {' '.join(args)} failed on {url.split('://')[0]}: {tail}")
        return _Sample(wall, cpu.read_cpu(Path(parts)),
                       None if busy is None or after is None else after - busy)


def _minimum_and_spread(samples: list[_Sample]) -> tuple[float, float | None]:
    walls = [sample.wall for sample in samples]
    spread = abs(min(walls[0::2]) - min(walls[1::2])) if len(walls) >= 2 else None
    return min(walls), spread


def _interleaved(configs: Iterable[tuple[str, ...]], folder: Path, url: str, runs: int,
                 progress: Callable[[str], None], warmup: bool = True) -> dict[tuple[str, ...], list[_Sample]]:
    samples: dict[tuple[str, ...], list[_Sample]] = {config: [] for config in configs}
    for config in samples if warmup else []:  # untimed: bytecode caches, the page cache, the server
        _run(folder, url, *config)
    for run in range(runs):
        order = list(samples)
        random.shuffle(order)
        progress(f"xdist: run {run + 1} of {runs}")
        for config in order:
            samples[config].append(_run(folder, url, *config))
    return samples


def run_workers(backend: str, url: str, tests: int = 1000, workers: Iterable[int] = (0, 1, 2),
                runs: int = 3, progress: Callable[[str], None] = lambda line: None,
                warmup: bool = True) -> list[WorkersResult]:
    """The suite with each number of ``workers`` (see the module docstring); ``url`` is the
    database the runs name (each run creates its test databases beside it)."""
    counts = list(workers)
    with tempfile.TemporaryDirectory(prefix="recipes-xdist-bench-") as folder:
        samples = _interleaved([("-n", str(n)) for n in counts], write_suite(Path(folder), tests),
                               url, runs, progress, warmup)
    results = []
    for n in counts:
        wall, spread = _minimum_and_spread(samples[("-n", str(n))])
        results.append(WorkersResult(backend, n, tests, wall, spread, runs, None,
                                     *_where_it_went(samples[("-n", str(n))])))
    if 0 in counts:
        serial = results[counts.index(0)].wall_s
        for result in results:
            result.speedup = serial / result.wall_s
    return results


def _where_it_went(samples: list[_Sample]) -> tuple[float | None, float | None, float | None, float | None]:
    """(pytest's CPU s, the workers', the rest of the machine's, cores busy) in the fastest run."""
    fastest = min(samples, key=lambda sample: sample.wall)
    own = fastest.parts.get("pytest")
    workers = sum(seconds for part, seconds in fastest.parts.items() if part != "pytest")
    if fastest.busy is None or own is None:
        return own, workers, None, None
    return own, workers, max(0.0, fastest.busy - own - workers), fastest.busy / fastest.wall


def reuse_timings(url: str, tests: int = 100, runs: int = 3, workers: int = 0,
                  progress: Callable[[str], None] = lambda line: None,
                  warmup: bool = True) -> dict[str, tuple[float, float | None]]:
    """Wall seconds (minimum, spread) of a run that builds its databases (the default, from the
    demo's migrations) and of one that reuses those a first ``--reuse-db`` run kept; the kept
    databases are removed at the end (``--create-db`` rebuilds them: not measured).
    ``warmup=False`` leaves out the untimed warm-up runs but that first ``--reuse-db`` run."""
    n = ("-n", str(workers))
    with tempfile.TemporaryDirectory(prefix="recipes-reuse-bench-") as folder:
        project = write_suite(Path(folder), tests, schema="alembic")
        try:
            if not warmup:  # untimed all the same: it builds what the reused runs find
                _run(project, url, *n, "--reuse-db")
            samples = _interleaved([n, (*n, "--reuse-db")], project, url, runs, progress, warmup)
        finally:
            _remove_kept(url, workers)
    return {"built": _minimum_and_spread(samples[n]),
            "reused": _minimum_and_spread(samples[(*n, "--reuse-db")])}


def _remove_kept(url: str, workers: int) -> None:
    """Drop what --reuse-db kept beside the database ``url`` names."""
    from sqlalchemy import make_url

    from ..databases import remove_sqlite
    from ..janitor import drop_kept_databases
    from ..runs import Run

    parsed = make_url(url)
    roles = [None] if workers == 0 else [f"gw{i}" for i in range(workers)] + ["template"]
    kept = Run(reuse=True)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        for role in roles:
            remove_sqlite(path.with_name(kept.name(path.stem, role=role, limit=255) + (path.suffix or ".db")))
    else:
        server = parsed.set(database=parsed.database or "postgres")
        drop_kept_databases(server, [kept.name(str(server.database), role=role) for role in roles])
