"""The plugin in projects it was not written for: what four real test suites ran into.

Each test builds a small project with pytester and runs pytest on it in a subprocess, as a
user's suite would run: layouts with the conftest in a package, several declarative bases,
PostgreSQL schemas, sessionmakers the application holds, the URL the project's CI already
sets. The ``backend`` parameter runs a test on SQLite and on the PostgreSQL under test.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from sqlalchemy import URL, text

from recipes.databases import make_engine

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
{extra}
"""


def _url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """A database URL for the project under test: SQLite, or the suite's PostgreSQL."""
    if request.param == "sqlite":
        return "sqlite+aiosqlite://"
    return _url(request.getfixturevalue("pg_server_url"))


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """A project with an ini (extra lines given) whose suite runs in a subprocess."""
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)

    def run(*args: str, ini: str = "", **files: str) -> pytest.RunResult:
        pytester.makeini(INI.format(extra=textwrap.dedent(ini)))
        for name, body in files.items():
            path = pytester.path / f"{name.replace('__', '/')}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(body))
        return pytester.runpytest_subprocess(
            "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:faker", "-p", "no:sqla", *args
        )

    return run


TEST_SELECT_1 = """
    import pytest
    from sqlalchemy import text

    @pytest.mark.asyncio
    async def test_database(db_session):
        assert await db_session.scalar(text("SELECT 1")) == 1
"""


# -- 1. the entry point --------------------------------------------------------------------

def test_db_url_parses_with_the_conftest_in_a_package_found_through_testpaths(project, backend):
    result = project(
        "--db-url", backend,
        ini="testpaths = app\nrecipes_metadata = recipes.demo.models:Base",
        app__conftest='pytest_plugins = ["recipes.plugin"]\n',
        app__test_app=TEST_SELECT_1,
    )
    result.assert_outcomes(passed=1)


def test_inert_until_used_and_registered_once_when_loaded_both_ways(project):
    plain = project(ini="", test_plain="def test_plain():\n    pass\n")
    both = project(
        "--db-url", "sqlite+aiosqlite://",
        conftest='pytest_plugins = ["recipes.plugin"]\n',
        test_plain="""
            import sys

            def test_plain(request):
                plugin = sys.modules["recipes.plugin"]
                registered = [p for p in request.config.pluginmanager.get_plugins() if p is plugin]
                assert len(registered) == 1
        """,
    )

    plain.assert_outcomes(passed=1)
    assert not any(line.startswith("recipes:") for line in plain.outlines)  # no header line
    both.assert_outcomes(passed=1)
    assert any(line.startswith("recipes: sqlite: sqlite+aiosqlite://") for line in both.outlines)


def test_no_recipes_turns_it_off(project):
    result = project("-p", "no:recipes", test_app=TEST_SELECT_1)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'db_session' not found*"])


# -- 3. schemas ----------------------------------------------------------------------------

MODELS_IN_A_SCHEMA = """
    from sqlalchemy import ForeignKey
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Customer(Base):
        __tablename__ = "customers"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Invoice(Base):
        __tablename__ = "invoices"
        __table_args__ = {"schema": "billing"}
        id: Mapped[int] = mapped_column(primary_key=True)
        customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
"""


def test_each_schema_the_models_name_is_created_on_postgresql(project, pg_server_url):
    result = project(
        "--db-url", _url(pg_server_url),
        ini="recipes_metadata = models:Base",
        models=MODELS_IN_A_SCHEMA,
        test_billing="""
            import pytest
            from models import Customer, Invoice

            @pytest.mark.asyncio
            @pytest.mark.parametrize("n", [1, 2])
            async def test_invoice(db_session, n):
                db_session.add(Customer(id=n))
                await db_session.flush()
                db_session.add(Invoice(customer_id=n))
                await db_session.commit()
        """,
    )
    result.assert_outcomes(passed=2)


def test_a_schema_on_sqlite_is_one_line_naming_the_table(project):
    result = project(
        ini="recipes_metadata = models:Base", models=MODELS_IN_A_SCHEMA,
        test_billing=TEST_SELECT_1.replace("db_session", "db_engine, db_session"),
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*recipes: table billing.invoices: SQLite has no schema 'billing'*"])
    assert "Traceback" not in result.stdout.str()


def test_a_table_the_database_refuses_is_one_line_not_a_traceback_per_test(project, backend):
    result = project(
        "--db-url", backend,
        ini="recipes_metadata = models:Base",
        models="""
            from sqlalchemy import CheckConstraint
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Broken(Base):
                __tablename__ = "broken"
                __table_args__ = (CheckConstraint("no_such_column > 0"),)
                id: Mapped[int] = mapped_column(primary_key=True)
        """,
        test_app=TEST_SELECT_1 + TEST_SELECT_1.replace("test_database", "test_again"),
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*recipes: cannot create table broken: *"])
    assert result.stdout.str().count("cannot create table") == 1


# -- 4. several bases ----------------------------------------------------------------------

def _base(table: str, *columns: str) -> str:
    fields = "\n".join(f"    {c}: Mapped[str] = mapped_column(default='')" for c in columns)
    return (
        "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column\n\n"
        "class Base(DeclarativeBase):\n    pass\n\n"
        f"class Row(Base):\n    __tablename__ = {table!r}\n"
        "    id: Mapped[int] = mapped_column(primary_key=True)\n" + fields + "\n"
    )


def test_several_bases_comma_separated_create_every_table(project, backend):
    result = project(
        "--db-url", backend,
        ini="recipes_metadata = app_models:Base, plugin_models:Base",
        app_models=_base("accounts", "email"),
        plugin_models=_base("audit", "event"),
        test_both="""
            import pytest
            import app_models, plugin_models

            @pytest.mark.asyncio
            async def test_both(db_session):
                db_session.add_all([app_models.Row(email="a"), plugin_models.Row(event="b")])
                await db_session.commit()
        """,
    )
    result.assert_outcomes(passed=1)


def test_one_table_defined_differently_by_two_bases_fails_naming_both(project):
    result = project(
        ini="recipes_metadata = app_models:Base, plugin_models:Base",
        app_models=_base("users", "email"),
        plugin_models=_base("users", "name"),
        test_app=TEST_SELECT_1,
    )

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*table 'users' is defined twice, differently: by app_models:Base (id, email) "
        "and by plugin_models:Base (id, name)*"
    ])


# -- 5. sessionmakers the application holds --------------------------------------------------

APP_DB = """
    import os
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from recipes.demo.models import User

    # The application's own engine, on the database the application names.
    SessionLocal = async_sessionmaker(create_async_engine(os.environ["APP_URL"]))

    async def background_signup(email):
        async with SessionLocal() as session:
            session.add(User(email=email, name=email.split("@")[0]))
            await session.commit()
"""


def test_an_application_sessionmaker_joins_the_test_transaction(project, pg_server_url, monkeypatch):
    monkeypatch.setenv("APP_URL", _url(pg_server_url))
    result = project(
        "--db-url", _url(pg_server_url),
        ini="recipes_metadata = recipes.demo.models:Base\nrecipes_sessionmakers = app_db:SessionLocal",
        app_db=APP_DB,
        test_jobs="""
            import pytest
            from sqlalchemy import func, select
            import app_db
            from recipes.demo.models import User

            original = app_db.SessionLocal

            @pytest.mark.asyncio
            @pytest.mark.parametrize("n", [1, 2])
            async def test_job_rows_are_the_tests(db_session, n):
                await app_db.background_signup("ada@example.com")
                assert await db_session.scalar(select(func.count()).select_from(User)) == 1

            def test_restored_after_each_test():
                with pytest.raises(RuntimeError, match="asks for no database fixture"):
                    app_db.SessionLocal()

            def test_last(db_sessionmaker):
                assert app_db.SessionLocal is db_sessionmaker
        """,
    )

    result.assert_outcomes(passed=4)
    # The database the application names never got a users table, let alone a row.
    async def tables() -> list[str]:
        engine = make_engine(pg_server_url)
        async with engine.connect() as connection:
            rows = await connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'"))
            found = [row[0] for row in rows]
        await engine.dispose()
        return found

    assert asyncio.run(tables()) == []


def test_a_sessionmaker_that_does_not_import_is_one_line(project):
    result = project(ini="recipes_sessionmakers = app_db:Nope", app_db="x = 1\n",
                     test_app=TEST_SELECT_1)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*recipes_sessionmakers names 'app_db:Nope', which does not import*"])


# -- 6. the URL the project already has ----------------------------------------------------

def test_the_ini_takes_the_url_from_the_environment(project, pg_server_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", _url(pg_server_url))
    result = project(
        ini="recipes_db_url = ${DATABASE_URL}\nrecipes_metadata = recipes.demo.models:Base",
        test_app=TEST_SELECT_1.replace("db_session):", "db_session, db_url):\n"
                                       "        assert db_url.database.endswith(f'_test_{__import__(\"os\").getppid()}') or '_test_' in db_url.database"),
    )

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"recipes: postgresql: *{pg_server_url.database}_test_*"])


def test_an_unset_variable_is_one_line_and_a_default_serves(project, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    unset = project(ini="recipes_db_url = ${DATABASE_URL}", test_app=TEST_SELECT_1)
    default = project(
        ini="recipes_db_url = ${DATABASE_URL:-sqlite+aiosqlite://}\n"
        "recipes_metadata = recipes.demo.models:Base",
        test_app=TEST_SELECT_1,
    )

    assert unset.ret == pytest.ExitCode.USAGE_ERROR
    unset.stderr.fnmatch_lines(["*recipes_db_url names ${DATABASE_URL}, which is not set*"])
    default.assert_outcomes(passed=1)
