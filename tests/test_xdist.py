"""pytest-xdist and --reuse-db, run for real: ``pytest -n 2`` in a subprocess (recipes.workers).

Each test here gets a database of its own to name (``x<hex>`` on PostgreSQL, a folder of its
own for SQLite files), so that every test database a run creates beside it can be found, and
checked gone, even while other runs share the server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, make_url

from recipes.databases import memory_folder
from recipes.janitor import process_alive, run_coroutine

from servers import admin

MODELS = """
import os
from sqlalchemy import event, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    if os.environ.get("EXTRA_COLUMN"):  # the models change between two runs
        extra: Mapped[str | None] = mapped_column(String(50))

@event.listens_for(Item.__table__, "after_create")
def built(*args, **kwargs):  # one line per schema build, from the process that built it
    with open(os.environ["BUILD_LOG"], "a") as log:
        log.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
"""

TESTS = """
import os, pytest
from sqlalchemy import text
from models import Item

@pytest.mark.parametrize("n", range(40))
async def test_isolated(db_session, db_url, n):
    db_session.add(Item(name=str(n)))
    await db_session.commit()
    assert await db_session.scalar(text("SELECT count(*) FROM items")) == 1
    with open(os.environ["SEEN_LOG"], "a") as log:
        log.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {db_url.database}\\n")
"""

CONFTEST = """
import os

def pytest_configure(config):  # the pid of each run this test starts, which names its files
    if "PYTEST_XDIST_WORKER" not in os.environ:
        with open(os.environ["RUNS_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # when this suite itself runs under xdist
    monkeypatch.setenv("BUILD_LOG", str(tmp_path / "builds.log"))
    monkeypatch.setenv("SEEN_LOG", str(tmp_path / "seen.log"))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path), prepend=os.pathsep)
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    pytester.makepyfile(models=MODELS, test_items=TESTS, conftest=CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "recipes_metadata = models:Base\n"
    )
    return pytester


def run(project: pytest.Pytester, url: str, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:sqla",
        "--db-url", url, *args,
    )


def logged(name: str) -> list[str]:
    path = Path(os.environ[name])
    lines = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


# -- the databases: one of this test's own to name, and what was created beside it ------------

@pytest.fixture(params=["postgresql", "mysql", "sqlite-file", "sqlite-memory"])
def named(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for the project to name; after the test, checks that nothing a run left
    beside it remains (but what --reuse-db keeps, which the test drops)."""
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server_url")
        name = f"x{uuid.uuid4().hex[:12]}"
        _admin(server, f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
        _admin(server, *[f'DROP DATABASE "{left}" WITH (FORCE)' for left in pg_leftovers(server, name)],
               f'DROP DATABASE "{name}" WITH (FORCE)')
    elif request.param == "mysql":
        server = request.getfixturevalue("mysql_server_url")
        name = f"x{uuid.uuid4().hex[:12]}"
        _admin(server, f"CREATE DATABASE `{name}`")
        yield server.set(database=name).render_as_string(hide_password=False)
        _admin(server, *[f"DROP DATABASE `{left}`" for left in mysql_leftovers(server, name)],
               f"DROP DATABASE `{name}`")
    elif request.param == "sqlite-file":
        yield f"sqlite+aiosqlite:///{tmp_path}/app.db"
    else:
        yield "sqlite+aiosqlite://"


def _query(server: URL, *statements: str, **params: str) -> list[str]:
    """Run ``statements`` on the server (AUTOCOMMIT); the first column of the last one's rows."""
    last = run_coroutine(lambda: admin(server, *statements, **params))[-1]
    return [row[0] for row in last or []]


def _admin(server: URL, *statements: str) -> None:
    run_coroutine(lambda: admin(server, *statements))


def pg_leftovers(server: URL, name: str) -> list[str]:
    return _query(server, "SELECT datname FROM pg_database WHERE datname LIKE :prefix ORDER BY datname",
                  prefix=f"{name}_test%")


def mysql_leftovers(server: URL, name: str) -> list[str]:
    return _query(server, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE :prefix "
                  "ORDER BY SCHEMA_NAME", prefix=f"{name}_test%")


def leftovers(url: str, running: bool = False) -> list[str]:
    """Test databases this test's runs left beside the database ``url`` names (``running``: or
    that a run still running has there)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return pg_leftovers(parsed, str(parsed.database))
    if parsed.get_backend_name() == "mysql":
        return mysql_leftovers(parsed, str(parsed.database))
    if parsed.database:
        return sorted(p.name for p in Path(parsed.database).parent.glob("app_test*"))
    # in the shared folder, only the files named with the pid of a run of this test (the suite
    # may run beside itself, and another job's killed run leaves files until its next run)
    path = Path(os.environ["RUNS_LOG"])
    ours = set(path.read_text().split()) if path.exists() else set()
    return sorted(p.name for p in memory_folder().glob("recipes-*.sqlite*")
                  if (owner := p.name.split("-")[1]) in ours and (running or not process_alive(int(owner))))


# -- the tests -----------------------------------------------------------------------------------

def test_each_worker_has_a_database_of_its_own_and_the_schema_is_built_once(project, named):
    result = run(project, named, "-n", "2")
    result.assert_outcomes(passed=40)
    seen = logged("SEEN_LOG")
    databases = {worker: database for worker, database in zip(seen[0::2], seen[1::2])}
    assert set(databases) == {"gw0", "gw1"}, seen
    assert len(set(databases.values())) == 2 and all(
        re.search(rf"[_-]{worker}$", Path(database).stem) for worker, database in databases.items()
    ), databases  # each its own, named with the worker id
    # the schema built once, the workers' databases copied; on MySQL (no templates) per worker
    assert len(logged("BUILD_LOG")) == (2 if named.startswith("mysql") else 1)
    assert leftovers(named) == []


def test_a_run_without_workers_builds_its_schema_itself(project, named):
    run(project, named).assert_outcomes(passed=40)
    assert logged("BUILD_LOG") == ["main"]
    assert leftovers(named) == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two workers"])
def test_reuse_db_keeps_the_databases_while_the_schema_is_unchanged(project, named, workers, monkeypatch):
    if named == "sqlite+aiosqlite://" or named.startswith("mysql"):  # rebuilt every run, removed
        for _ in range(2):  # (in RAM, and cheap; on MySQL, no template to keep a schema in)
            run(project, named, "--reuse-db", *workers).assert_outcomes(passed=40)
            assert len(logged("BUILD_LOG")) == (2 if workers and named.startswith("mysql") else 1)
            assert leftovers(named) == []
        return
    run(project, named, "--reuse-db", *workers).assert_outcomes(passed=40)
    assert len(logged("BUILD_LOG")) == 1  # the template, or the one database
    kept = leftovers(named)
    assert kept, "--reuse-db kept nothing"
    run(project, named, "--reuse-db", *workers).assert_outcomes(passed=40)
    assert logged("BUILD_LOG") == []  # reused: no schema built
    monkeypatch.setenv("EXTRA_COLUMN", "1")  # the models changed: rebuilt
    run(project, named, "--reuse-db", *workers).assert_outcomes(passed=40)
    assert len(logged("BUILD_LOG")) == 1
    run(project, named, "--reuse-db", *workers).assert_outcomes(passed=40)
    assert logged("BUILD_LOG") == []
    run(project, named, "--create-db", *workers).assert_outcomes(passed=40)  # rebuilt anyway
    assert len(logged("BUILD_LOG")) == 1
    run(project, named, *workers).assert_outcomes(passed=40)  # without the option: throwaway ones
    assert len(logged("BUILD_LOG")) == 1
    assert leftovers(named) == kept  # and the kept ones untouched


def test_a_crashed_worker_leaves_no_database_behind(project, named):
    project.makepyfile(test_crash="""
        import os, pytest
        async def test_the_worker_dies(db_session):
            os._exit(1)
    """)
    result = run(project, named, "-n", "2")
    result.stdout.fnmatch_lines(["*worker*crashed*"])
    assert leftovers(named) == []


def test_a_killed_run_leaves_nothing_behind_after_the_next(project, named):
    """SIGKILL to pytest and its workers at once: no teardown runs anywhere."""
    project.makepyfile(test_hang="""
        import os, time
        async def test_hangs(db_session):
            open(os.environ["SEEN_LOG"] + ".started", "a").write("x")
            time.sleep(60)
    """)
    started = Path(os.environ["SEEN_LOG"] + ".started")
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker",
         "-p", "no:sqla", "--db-url", named, "-n", "2", "test_hang.py"],
        cwd=project.path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert started.exists(), "the test never started"
    assert leftovers(named, running=True), "the run had created nothing to leave behind"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (project.path / "test_hang.py").unlink()
    run(project, named, "-n", "2").assert_outcomes(passed=40)
    assert leftovers(named) == []
