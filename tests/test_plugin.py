"""The plugin end to end, in fresh projects run by pytest in a subprocess.

Each test writes a small project that loads only ``recipes.plugin`` and runs it the way a user
would; the outcome is read from that run's report and checked through separate connections.
"""

from __future__ import annotations

import hashlib
import textwrap

import pytest
import sqlalchemy
from sqlalchemy import URL

from recipes.databases import resolve_urls

COMMITS_THEN_CHECKS = """
    import pytest
    from recipes.demo.service import count_users, register_user

    @pytest.mark.asyncio
    async def test_1_commits(db_session):
        await register_user(db_session, "ada@example.com")
        assert await count_users(db_session) == 1

    @pytest.mark.asyncio
    async def test_2_fails_half_way(db_session):
        await register_user(db_session, "grace@example.com")
        raise RuntimeError("boom")

    @pytest.mark.asyncio
    async def test_3_sees_nothing(db_session):
        assert await count_users(db_session) == 0
"""

# At the very end of the run, a fresh engine counts the rows of every table.
CENSUS = """
    import json, pathlib, pytest
    from recipes.demo.models import Base
    from recipes.databases import make_engine
    from recipes.janitor import run_coroutine
    from sqlalchemy import func, select

    @pytest.fixture(scope="session", autouse=True)
    def census(db_url, db_engine):
        yield
        async def count():
            engine = make_engine(db_url)
            async with engine.connect() as connection:
                rows = {t.name: await connection.scalar(select(func.count()).select_from(t))
                        for t in Base.metadata.sorted_tables}
            await engine.dispose()
            return rows
        counts = run_coroutine(count)
        path = pathlib.Path("census.json")
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + [counts]))
"""


SQLALCHEMY_2_1 = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (2, 1)


def _pg(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_commits_and_failures_leave_nothing_behind(backend, run_pytest, pytester, request):
    url = "sqlite+aiosqlite://" if backend == "sqlite" else _pg(request.getfixturevalue("pg_server_url"))
    pytester.makepyfile(test_flow=textwrap.dedent(COMMITS_THEN_CHECKS), conftest_census=textwrap.dedent(CENSUS))
    pytester.makeconftest('pytest_plugins = ["recipes.plugin", "conftest_census"]\n')

    result = run_pytest("--db-url", url)

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_2_fails_half_way*RuntimeError: boom*"])
    import json

    assert json.loads((pytester.path / "census.json").read_text()) == [{"users": 0, "posts": 0}]


def test_several_urls_parametrize_every_database_test_by_dialect(run_pytest, pytester, pg_server_url):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_uses_the_database(db_session):
            pass

        @pytest.mark.asyncio
        @pytest.mark.backends("postgresql")
        async def test_postgres_only(db_session):
            pass

        def test_without_database():
            pass
        """
    )
    result = run_pytest("-v", "-rs", "--db-url", "sqlite+aiosqlite://", "--db-url", _pg(pg_server_url))

    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            "*test_uses_the_database[[]sqlite[]] PASSED*",
            "*test_uses_the_database[[]postgresql[]] PASSED*",
            "*test_postgres_only[[]postgresql[]] PASSED*",
            "*test_without_database PASSED*",
            "SKIPPED*runs only on postgresql; this is sqlite*",
        ]
    )


def test_both_postgresql_drivers_run_side_by_side_with_ids_by_driver(run_pytest, pytester, pg_server_url):
    """asyncpg and psycopg 3 on one server, and plain postgresql://, which SQLAlchemy 2.1 reads
    as psycopg: each gets a test database of its own, and the ids name the driver."""
    pytester.makepyfile(
        """
        import pytest
        from recipes.demo.service import count_users, register_user

        @pytest.mark.asyncio
        async def test_commits_inside_the_test(db_session):
            await register_user(db_session, "ada@example.com")
            assert await count_users(db_session) == 1
        """
    )
    asyncpg = _pg(pg_server_url.set(drivername="postgresql+asyncpg"))
    psycopg = _pg(pg_server_url.set(drivername="postgresql+psycopg"))
    plain = _pg(pg_server_url.set(drivername="postgresql"))
    if not SQLALCHEMY_2_1:  # there plain postgresql:// is psycopg2: refused, saying why
        refused = run_pytest("--db-url", plain)
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        assert "reads plain postgresql:// as psycopg2" in refused.stderr.str()
    plains = ["--db-url", plain] if SQLALCHEMY_2_1 else []
    result = run_pytest("-v", "--db-url", asyncpg, "--db-url", psycopg, *plains)

    result.assert_outcomes(passed=3 if SQLALCHEMY_2_1 else 2)
    plain_id = "*test_commits_inside_the_test[[]postgresql+psycopg-2[]] PASSED*"
    result.stdout.fnmatch_lines_random(
        [
            "*test_commits_inside_the_test[[]postgresql+asyncpg[]] PASSED*",
            "*test_commits_inside_the_test[[]postgresql+psycopg[]] PASSED*",
            *([plain_id] if SQLALCHEMY_2_1 else []),
        ]
    )


def test_the_report_header_names_the_databases_and_masks_the_password(run_pytest, pytester, pg_server_url):
    with_password = _pg(pg_server_url.set(password="hunter2"))  # trust auth ignores it
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_ok(db_session):
            pass
        """
    )
    result = run_pytest("--db-url", with_password, "--db-url", "sqlite+aiosqlite://")

    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["recipes: postgresql: postgresql+asyncpg://*:***@*", "recipes: sqlite: *"])
    assert "hunter2" not in result.stdout.str() + result.stderr.str()


def test_the_command_line_beats_the_environment_which_beats_the_ini():
    assert resolve_urls(["sqlite+aiosqlite:///cli.db"], "sqlite+aiosqlite:///env.db", "sqlite+aiosqlite:///ini.db") == [
        "sqlite+aiosqlite:///cli.db"
    ]
    assert resolve_urls(None, "sqlite+aiosqlite:///env.db, sqlite+aiosqlite://", "sqlite+aiosqlite:///ini.db") == [
        "sqlite+aiosqlite:///env.db",
        "sqlite+aiosqlite://",
    ]
    assert resolve_urls(None, None, "sqlite+aiosqlite:///ini.db") == ["sqlite+aiosqlite:///ini.db"]
    assert resolve_urls(None, None, "") == ["sqlite+aiosqlite://"]


def test_precedence_in_a_real_run(run_pytest, pytester, monkeypatch, tmp_path):
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "recipes_metadata = recipes.demo.models:Base\nrecipes_db_url = sqlite+aiosqlite:///ini.db\n"
    )
    pytester.makepyfile("def test_nothing():\n    pass\n")
    monkeypatch.setenv("RECIPES_DB_URL", "sqlite+aiosqlite:///env.db")

    from_env = pytester.runpytest_subprocess("-p", "no:randomly")
    from_cli = pytester.runpytest_subprocess("-p", "no:randomly", "--db-url", "sqlite+aiosqlite:///cli.db")

    from_env.stdout.fnmatch_lines(["recipes: sqlite: sqlite+aiosqlite:///env.db*"])
    from_cli.stdout.fnmatch_lines(["recipes: sqlite: sqlite+aiosqlite:///cli.db*"])


def test_a_project_that_writes_only_the_plugin_line_and_its_metadata(pytester, monkeypatch, pg_server_url):
    """The promise of the README: change nothing but --db-url to move between databases."""
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    pytester.makepyfile(
        shop_models="""
            from sqlalchemy import String
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Product(Base):
                __tablename__ = "products"
                id: Mapped[int] = mapped_column(primary_key=True)
                sku: Mapped[str] = mapped_column(String(20), unique=True)
        """,
        test_shop="""
            import pytest
            from sqlalchemy import func, select
            from shop_models import Product

            @pytest.mark.asyncio
            @pytest.mark.parametrize("n", range(3))
            async def test_each_run_starts_empty(db_session, n):
                assert await db_session.scalar(select(func.count()).select_from(Product)) == 0
                db_session.add(Product(sku=f"sku-{n}"))
                await db_session.commit()
        """,
    )
    pytester.makeconftest('pytest_plugins = ["recipes.plugin"]\n')
    pytester.makeini("[pytest]\nrecipes_metadata = shop_models:Base\n")
    pytester.syspathinsert()

    on_sqlite = pytester.runpytest_subprocess("-p", "no:randomly")
    on_postgres = pytester.runpytest_subprocess("-p", "no:randomly", "--db-url", _pg(pg_server_url))

    on_sqlite.assert_outcomes(passed=3)
    on_postgres.assert_outcomes(passed=3)


def test_embedded_postgres_starts_a_server_for_the_run_and_stops_it(run_pytest, pytester):
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import text
        from recipes.demo.service import register_user

        @pytest.mark.asyncio
        async def test_on_a_real_postgres(db_session, db_url):
            assert db_url.get_backend_name() == "postgresql"
            assert "PostgreSQL" in await db_session.scalar(text("SELECT version()"))
            await register_user(db_session, "ada@example.com")
            data_dir = await db_session.scalar(text("SHOW data_directory"))
            open("data_dir.txt", "w").write(data_dir)
        """
    )
    result = run_pytest("--db-url", "embedded-postgres")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["recipes: postgresql: embedded-postgres*"])
    data_dir = (pytester.path / "data_dir.txt").read_text()
    import os

    assert not os.path.exists(data_dir), "the embedded server's data was not removed"


def test_a_file_sqlite_database_the_user_named_is_never_touched(run_pytest, pytester):
    named = pytester.path / "app.db"
    import sqlite3

    with sqlite3.connect(named) as connection:
        connection.execute("CREATE TABLE keep (x)")
        connection.execute("INSERT INTO keep VALUES (42)")
    connection.close()
    before = hashlib.sha256(named.read_bytes()).hexdigest()
    pytester.makepyfile(textwrap.dedent(COMMITS_THEN_CHECKS))

    result = run_pytest(f"--db-url=sqlite+aiosqlite:///{named}")

    result.assert_outcomes(passed=2, failed=1)
    assert hashlib.sha256(named.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in pytester.path.glob("app*")) == ["app.db"], "a test file was left behind"


KEPT_IN_MEMORY = """
    import gc, pytest
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from recipes.loops import LoopTransaction

    @pytest.mark.asyncio(loop_scope="session")
    @pytest.mark.parametrize("n", range(20))
    async def test_on_the_session_loop(db_session, n):
        await db_session.commit()

    @pytest.mark.asyncio
    @pytest.mark.parametrize("n", range(20))
    async def test_on_a_function_loop(db_session, n):
        await db_session.commit()

    def test_z_none_of_it_is_kept():
        gc.collect()
        kept = {kind.__name__: sum(isinstance(o, kind) for o in gc.get_objects())
                for kind in (LoopTransaction, AsyncSession, AsyncConnection)}
        assert kept == {"LoopTransaction": 0, "AsyncSession": 0, "AsyncConnection": 0}
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tests_leave_no_connection_or_session_in_memory(backend, run_pytest, pytester, request):
    """Each test's connection, sessions and their events go with the test: a long suite's
    memory does not grow with them (nor Python's garbage collection get slower). The loop
    guard's entry once held them to the end of the run."""
    url = "sqlite+aiosqlite://" if backend == "sqlite" else _pg(request.getfixturevalue("pg_server_url"))
    pytester.makepyfile(test_memory=textwrap.dedent(KEPT_IN_MEMORY))
    pytester.makeconftest('pytest_plugins = ["recipes.plugin"]\n')

    result = run_pytest("--db-url", url)

    result.assert_outcomes(passed=41)
