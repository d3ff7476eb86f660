"""A test that leaves a query running, or cancels one, does not break the next test."""

from __future__ import annotations

import pytest

LEFTOVERS = """
    import asyncio
    import pytest
    from sqlalchemy import text
    from recipes.demo.service import count_users, register_user

    def slow_query(session):
        if session.bind.dialect.name == "postgresql":
            return text("SELECT pg_sleep(1)")
        return text(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
            "SELECT count(*) FROM c"
        )

    @pytest.mark.asyncio
    async def test_1_leaves_a_query_running(db_session):
        await register_user(db_session, "ada@example.com")
        asyncio.get_running_loop().create_task(db_session.execute(slow_query(db_session)))
        await asyncio.sleep(0.05)  # the query is now in flight on the test's connection

    @pytest.mark.asyncio
    async def test_2_cancels_a_query(db_session):
        await register_user(db_session, "grace@example.com")
        task = asyncio.create_task(db_session.execute(slow_query(db_session)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    @pytest.mark.asyncio
    async def test_3_starts_clean(db_session):
        assert await count_users(db_session) == 0
        await register_user(db_session, "ada@example.com")
        assert await count_users(db_session) == 1
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_leftover_and_cancelled_queries_do_not_break_the_next_test(backend, run_pytest, pytester, request):
    if backend == "sqlite":
        url = "sqlite+aiosqlite://"
    else:
        url = request.getfixturevalue("pg_server_url").render_as_string(hide_password=False)
    pytester.makepyfile(LEFTOVERS)

    result = run_pytest("-v", "-W", "error::pytest.PytestUnraisableExceptionWarning", "--db-url", url)

    result.assert_outcomes(passed=3)
