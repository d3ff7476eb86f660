"""The fixtures work on whatever event loop the test runs on, and say so clearly when they can't.

Each case is a fresh project run by pytest in a subprocess on PostgreSQL, where a connection
used from the wrong loop really breaks (asyncpg: "attached to a different loop", then
"another operation is in progress"), and on SQLite.
"""

from __future__ import annotations

import textwrap

import pytest

HELPERS = """
    from recipes.demo.service import count_users, register_user

    async def add_and_count(session, email):
        await register_user(session, email)
        return await count_users(session)
"""

ASYNCIO_TESTS = """
    import pytest
    import pytest_asyncio
    from helpers import add_and_count

    @pytest_asyncio.fixture(loop_scope=LOOP)
    async def seeded(db_session):
        return await add_and_count(db_session, "seed@example.com")

    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_1_commits(db_session):
        assert await add_and_count(db_session, "a@example.com") == 1

    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_2_starts_clean(db_session):
        assert await add_and_count(db_session, "b@example.com") == 1

    @pytest.mark.asyncio(loop_scope=LOOP)
    async def test_3_own_fixture_on_the_same_loop(seeded, db_session, db_sessionmaker, db_connection):
        assert seeded == 1
        async with db_sessionmaker() as other:
            assert await add_and_count(other, "c@example.com") == 2

    class TestInAClass:
        @pytest.mark.asyncio(loop_scope=LOOP)
        async def test_4_in_a_class(self, db_session):
            assert await add_and_count(db_session, "d@example.com") == 1
"""

ANYIO_TESTS = """
    import pytest
    from helpers import add_and_count

    pytestmark = pytest.mark.anyio

    @pytest.fixture(scope=BACKEND_SCOPE)
    def anyio_backend():
        return "asyncio"

    @pytest.fixture
    async def seeded(db_session):  # a user's async fixture, run by anyio
        return await add_and_count(db_session, "seed@example.com")

    async def test_1_commits(db_session):
        assert await add_and_count(db_session, "a@example.com") == 1

    async def test_2_own_fixture(seeded, db_session):
        assert await add_and_count(db_session, "b@example.com") == 2

    async def test_3_starts_clean(db_session):
        assert await add_and_count(db_session, "c@example.com") == 1
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite+aiosqlite://"
    return request.getfixturevalue("pg_server_url").render_as_string(hide_password=False)


def _project(pytester: pytest.Pytester, tests: str, mode: str, fixture_loop: str, test_loop: str) -> None:
    pytester.makepyfile(helpers=textwrap.dedent(HELPERS), test_cases=textwrap.dedent(tests))
    pytester.makeini(
        "[pytest]\n"
        f"asyncio_mode = {mode}\n"
        f"asyncio_default_fixture_loop_scope = {fixture_loop}\n"
        f"asyncio_default_test_loop_scope = {test_loop}\n"
        "recipes_metadata = recipes.demo.models:Base\n"
    )
    pytester.syspathinsert()


@pytest.mark.parametrize("mode", ["strict", "auto"])
@pytest.mark.parametrize("loop", ["function", "class", "module", "session"])
@pytest.mark.parametrize("fixture_default", ["function", "session"])
def test_asyncio_tests_on_every_loop_scope(run_pytest, pytester, url, mode, loop, fixture_default):
    _project(pytester, ASYNCIO_TESTS.replace("LOOP", repr(loop)), mode, fixture_default, "function")
    result = run_pytest("--db-url", url, "-W", "error::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize("test_loop", ["function", "session"])
def test_the_ini_default_test_loop_scope_is_followed(run_pytest, pytester, url, test_loop):
    tests = ASYNCIO_TESTS.replace("(loop_scope=LOOP)", "").replace("@pytest_asyncio.fixture", "@pytest_asyncio.fixture(loop_scope=%r)" % test_loop)
    _project(pytester, tests, "strict", "function", test_loop)
    run_pytest("--db-url", url).assert_outcomes(passed=4)


@pytest.mark.parametrize("backend_scope", ["function", "session"])
def test_anyio_tests_in_strict_mode(run_pytest, pytester, url, backend_scope):
    _project(pytester, ANYIO_TESTS.replace("BACKEND_SCOPE", repr(backend_scope)), "strict", "function", "function")
    run_pytest("--db-url", url, "-p", "anyio").assert_outcomes(passed=3)


MISMATCH = """
    import pytest
    import pytest_asyncio
    from helpers import add_and_count

    @pytest_asyncio.fixture  # no loop_scope: asyncio_default_fixture_loop_scope = function
    async def seeded(db_session):
        return await add_and_count(db_session, "seed@example.com")

    @pytest.mark.asyncio(loop_scope="session")
    async def test_1_mismatch(seeded, db_session):
        assert await add_and_count(db_session, "a@example.com") == 2

    @pytest.mark.asyncio(loop_scope="session")
    async def test_2_after_the_mismatch(db_session):
        assert await add_and_count(db_session, "b@example.com") == 1
"""


def test_a_loop_mismatch_is_one_clear_error_naming_the_fixture_and_the_scopes(run_pytest, pytester, pg_server_url):
    _project(pytester, MISMATCH, "strict", "function", "function")
    result = run_pytest("--db-url", pg_server_url.render_as_string(hide_password=False))

    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1, result.stdout.str()
    assert outcomes.get("failed", 0) + outcomes.get("errors", outcomes.get("error", 0)) == 1
    output = result.stdout.str()
    result.stdout.fnmatch_lines(["*LoopMismatchError: recipes: db_session of *test_1_mismatch*"])
    assert "pytest-asyncio loop scope 'session'" in output
    assert "seeded (loop scope 'function'" in output
    assert "asyncio_default_fixture_loop_scope" in output
    assert "attached to a different loop" not in output
    assert "another operation is in progress" not in output


def test_anyio_tests_under_auto_mode_are_told_what_to_do(run_pytest, pytester, pg_server_url):
    _project(pytester, ANYIO_TESTS.replace("BACKEND_SCOPE", repr("function")), "auto", "function", "function")
    result = run_pytest("--db-url", pg_server_url.render_as_string(hide_password=False), "-p", "anyio")

    assert result.ret != 0
    result.stdout.fnmatch_lines(["*recipes: db_session cannot run on *event loop*asyncio_mode = strict*"])
    assert "attached to a different loop" not in result.stdout.str()
