"""recipes.migrations and the demo's Alembic environment, on every configured database.

The checks run on the plugin's test database (``db_url``) or inside the test's transaction
(``db_connection``); histories with a mistake in them are copies of the demo's migrations in
``tmp_path`` with one revision added. What the plugin builds with ``recipes_schema = alembic``
is checked in fresh projects run by pytest in a subprocess.
"""

from __future__ import annotations

import gc
import io
import shutil
import textwrap
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Column, MetaData, String, Text, inspect, insert, make_url, select, text
from sqlalchemy.exc import IntegrityError

import recipes.demo
from recipes.databases import make_engine, provision
from recipes.demo.models import Base, User
from recipes.migrations import (
    MigrationError,
    alembic_config,
    check_data_migration,
    check_no_drift,
    check_single_head,
    check_stairway,
    downgrade,
    upgrade,
)

DEMO = Path(recipes.demo.__file__).with_name("migrations")
INI = DEMO / "alembic.ini"
REVISIONS = ["0001", "0002", "0003", "0004", "0005"]

# MySQL and MariaDB commit DDL implicitly: the checks, which drop the tables they find and
# roll back, would drop the run's schema for good (recipes.migrations: "DDL that rolls back");
# the demo's migrations also use strpos(), which MySQL has not. Only the database tests are
# skipped there: the others run once, whatever the databases.
pytestmark = pytest.mark.backends("sqlite", "postgresql")


REVISION = '''\
"""{message}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None

def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''


@pytest.fixture
def history(tmp_path: Path):
    """A copy of the demo's migrations; ``add(revision, ...)`` writes one more revision."""
    shutil.copytree(DEMO, tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    ini = tmp_path / "migrations" / "alembic.ini"

    def add(revision: str, message: str, upgrade: str, downgrade: str, down: str = "0005") -> Path:
        body = REVISION.format(
            message=message, revision=revision, down=down,
            upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
            downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
        )
        (ini.parent / "versions" / f"{revision}_x.py").write_text(body)
        return ini

    add.ini = ini
    return add


async def tables(connection) -> set[str]:
    return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


# -- the demo history, and the checks passing ------------------------------------------------

def test_the_demo_history_has_one_head():
    assert check_single_head(INI) == "0005"


@pytest.mark.asyncio
async def test_the_stairway_walks_every_demo_revision(db_url):
    assert await check_stairway(db_url, INI) == REVISIONS


@pytest.mark.asyncio
async def test_the_demo_models_match_the_migrations(db_url):
    await check_no_drift(db_url, INI, Base.metadata)


@pytest.mark.asyncio
async def test_a_check_in_the_test_transaction_leaves_the_schema_of_the_plugin(db_connection):
    before = await tables(db_connection)
    assert {"users", "posts"} <= before and "alembic_version" not in before  # create_all's

    assert await check_stairway(db_connection, INI) == REVISIONS
    await check_no_drift(db_connection, INI, Base.metadata)

    assert await tables(db_connection) == before
    await db_connection.execute(insert(User).values(email="ada@example.com", name="ada"))
    assert await db_connection.scalar(select(User.name)) == "ada"


@pytest.mark.asyncio
async def test_a_check_on_a_url_leaves_the_database_as_it_was(db_url, db_engine, observe):
    await check_stairway(db_url, INI)

    assert await observe("users") == 0  # the plugin's tables are back, and empty
    engine = make_engine(db_url)
    async with engine.connect() as connection:
        assert "alembic_version" not in await tables(connection)
    await engine.dispose()


@pytest.fixture
def empty_database(db_url):
    """A database of its own beside the test database, for the commands that commit."""
    database = provision(db_url.render_as_string(hide_password=False))
    yield database.url
    database.close()


@pytest.mark.asyncio
async def test_upgrade_and_downgrade_on_a_connection_stay_in_its_transaction(empty_database):
    engine = make_engine(empty_database)
    try:
        async with engine.connect() as connection:
            async with connection.begin() as transaction:
                await upgrade(connection, INI, "0003")
                assert await tables(connection) == {"users", "posts", "alembic_version"}
                await downgrade(connection, INI, "0001")
                assert await tables(connection) == {"users", "alembic_version"}
                await transaction.rollback()
            assert await tables(connection) == set()
    finally:
        await engine.dispose()


@pytest.mark.asyncio
async def test_upgrade_and_downgrade_on_a_url_commit(empty_database):
    engine = make_engine(empty_database)
    try:
        await upgrade(empty_database, INI)
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT version_num FROM alembic_version")) == "0005"
            assert await tables(connection) == {"users", "posts", "alembic_version"}
        await downgrade(empty_database, INI, "base")
        async with engine.connect() as connection:
            assert await tables(connection) == {"alembic_version"}
    finally:
        await engine.dispose()


# -- the data migrations ---------------------------------------------------------------------

@pytest.mark.asyncio
async def test_users_get_the_local_part_of_their_email_as_name(db_url):
    async def before(connection):  # at 0001: users have an email, no name
        await connection.execute(
            text("INSERT INTO users (email) VALUES ('ada@example.com'), ('grace.hopper@navy.mil'), ('root')")
        )

    async def after(connection):
        rows = (await connection.execute(text("SELECT email, name FROM users ORDER BY id"))).all()
        assert rows == [("ada@example.com", "ada"), ("grace.hopper@navy.mil", "grace.hopper"), ("root", "root")]
        with pytest.raises(IntegrityError):  # NOT NULL from now on
            async with connection.begin_nested():
                await connection.execute(text("INSERT INTO users (email) VALUES ('x@example.com')"))

    async def reverted(connection):
        assert {c["name"] for c in await connection.run_sync(lambda s: inspect(s).get_columns("users"))} == {"id", "email"}
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 3

    await check_data_migration(db_url, INI, "0002", before=before, after=after, reverted=reverted)


@pytest.mark.asyncio
async def test_negative_likes_become_zero_before_the_check_constraint(db_connection):
    async def before(connection):  # at 0003: no CHECK, and no is_admin yet
        await connection.execute(text("INSERT INTO users (id, email, name) VALUES (1, 'ada@example.com', 'ada')"))
        await connection.execute(
            text("INSERT INTO posts (author_id, title, body, likes) VALUES (1, 'a', '', -3), (1, 'b', '', 5)")
        )

    async def after(connection):
        assert (await connection.scalars(text("SELECT likes FROM posts ORDER BY title"))).all() == [0, 5]
        with pytest.raises(IntegrityError, match="ck_posts_likes_not_negative|CHECK constraint failed"):
            async with connection.begin_nested():
                await connection.execute(text("UPDATE posts SET likes = -1"))

    await check_data_migration(db_connection, INI, "0004", before=before, after=after)


@pytest.mark.asyncio
async def test_rows_inserted_through_the_models_do_not_fit_the_revision_before(db_url):
    async def before(connection):  # the models' insert names users.is_admin, added in 0005
        await connection.execute(insert(User).values(email="ada@example.com", name="ada"))

    async def after(connection):
        raise AssertionError("not reached")

    with pytest.raises(MigrationError) as failure:
        await check_data_migration(db_url, INI, "0004", before=before, after=after)

    message = str(failure.value)
    assert message.startswith(
        "before() failed at revision 0003, the one before 0004 (posts.likes: never negative (a CHECK), "
        "after fixing the counts that are"
    )
    assert "is_admin" in message
    assert message.endswith("insert with SQL or sa.table(), naming only columns that exist there")


@pytest.mark.asyncio
async def test_an_upgrade_that_fails_on_the_rows_is_named(db_url, history):
    ini = history(
        "0006", "users.handle: unique, NOT NULL, no backfill",
        "op.add_column('users', sa.Column('handle', sa.String(40), nullable=False, server_default='x'))\n"
        "op.create_unique_constraint('uq_users_handle', 'users', ['handle'])",
        "op.drop_constraint('uq_users_handle', 'users', type_='unique')\nop.drop_column('users', 'handle')",
    )

    async def before(connection):
        await connection.execute(text("INSERT INTO users (email, name) VALUES ('a@x.org', 'a'), ('b@x.org', 'b')"))

    async def after(connection):
        raise AssertionError("not reached")

    with pytest.raises(MigrationError, match=r"^revision 0006 \(users.handle: unique, NOT NULL, no backfill\): "
                       r"upgrade with the rows of before\(\) failed: (IntegrityError|NotImplementedError)"):
        await check_data_migration(db_url, ini, "0006", before=before, after=after)


# -- failures, in words ----------------------------------------------------------------------

def drifted_models() -> MetaData:
    """The demo's tables as a developer changed them, without writing a migration."""
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["users"].append_column(Column("bio", Text()))
    metadata.tables["posts"].c.title.type = String(200)
    metadata.tables["users"].c.name.nullable = True
    return metadata


@pytest.mark.asyncio
async def test_drift_is_listed_in_words(db_url):
    with pytest.raises(MigrationError) as failure:
        await check_no_drift(db_url, INI, drifted_models())

    first, *differences, last = str(failure.value).splitlines()
    assert first == f"the models and the migrations differ on {make_url(db_url).get_backend_name()} (3 differences):"
    assert sorted(differences) == [
        "  - column posts.title: the models say VARCHAR(200), the migrations make it VARCHAR(120)",
        "  - column users.bio: in the models, but no migration makes it",
        "  - column users.name: the models say NULL, the migrations make it NOT NULL",
    ]
    assert last == "write a migration for each (alembic revision --autogenerate drafts one)"


@pytest.mark.asyncio
async def test_a_table_the_models_lost_is_listed(db_url):
    metadata = MetaData()
    Base.metadata.tables["users"].to_metadata(metadata)

    with pytest.raises(MigrationError, match="  - table posts: made by the migrations, but not in the models"):
        await check_no_drift(db_url, INI, metadata)


def test_two_heads_are_named(history):
    history("0006", "comments", "pass", "pass")
    ini = history("0007", "likes by user", "pass", "pass", down="0005")

    with pytest.raises(MigrationError) as failure:
        check_single_head(ini)

    assert str(failure.value) in (
        f"the history has 2 heads: {first}, {second}; merge them with: alembic merge heads -m 'merge'"
        for first, second in [("0006 (comments)", "0007 (likes by user)"), ("0007 (likes by user)", "0006 (comments)")]
    )


@pytest.mark.asyncio
async def test_a_merged_history_has_one_head_and_walks_the_stairway(db_url, history):
    history("0006", "comments", "op.create_table('comments', sa.Column('id', sa.Integer, primary_key=True))",
            "op.drop_table('comments')")
    ini = history("0007", "tags", "op.create_table('tags', sa.Column('id', sa.Integer, primary_key=True))",
                  "op.drop_table('tags')")
    command.merge(alembic_config(ini), ["0006", "0007"], message="merge comments and tags", rev_id="0008")

    assert check_single_head(ini) == "0008"
    walked = await check_stairway(db_url, ini)
    assert walked[:5] == REVISIONS and sorted(walked[5:7]) == ["0006", "0007"] and walked[7] == "0008"


@pytest.mark.asyncio
async def test_a_downgrade_that_leaves_a_table_behind_is_named(db_url, history):
    ini = history(
        "0006", "comments",
        "op.create_table('comments', sa.Column('id', sa.Integer, primary_key=True),\n"
        "                sa.Column('body', sa.Text, nullable=False))",
        "pass  # never downgraded in production",
    )

    with pytest.raises(MigrationError) as failure:
        await check_stairway(db_url, ini)

    assert str(failure.value) == (
        "revision 0006 (comments): its downgrade does not restore the schema before its upgrade: "
        "still there: column comments.body TEXT NOT NULL; column comments.id INTEGER NOT NULL; "
        "table comments"
    )


@pytest.mark.asyncio
async def test_a_downgrade_that_loses_a_column_is_named(db_url, history):
    ini = history(
        "0006", "users.role replaces users.is_admin",
        "op.add_column('users', sa.Column('role', sa.String(20), nullable=False, server_default='member'))\n"
        "with op.batch_alter_table('users') as batch_op:\n    batch_op.drop_column('is_admin')",
        "with op.batch_alter_table('users') as batch_op:\n    batch_op.drop_column('role')",
    )

    with pytest.raises(MigrationError) as failure:
        await check_stairway(db_url, ini)

    assert str(failure.value) == (
        "revision 0006 (users.role replaces users.is_admin): its downgrade does not restore the schema "
        "before its upgrade: missing: column users.is_admin BOOLEAN NOT NULL"
    )


@pytest.mark.asyncio
async def test_a_downgrade_that_fails_is_named(db_url, history):
    ini = history(
        "0006", "comments",
        "op.create_table('comments', sa.Column('id', sa.Integer, primary_key=True))",
        "op.drop_table('comment')",
    )

    with pytest.raises(MigrationError, match=r"^revision 0006 \(comments\): downgrade failed: "
                       r"(OperationalError|ProgrammingError): .*comment"):
        await check_stairway(db_url, ini)


@pytest.mark.asyncio
# asyncio.run() raised before it awaited the coroutine it was given: Python says so when it goes.
@pytest.mark.filterwarnings("ignore:coroutine 'run_async_migrations' was never awaited:RuntimeWarning")
async def test_an_async_env_py_from_the_template_is_explained(db_url, tmp_path):
    command.init(Config(tmp_path / "alembic.ini", stdout=io.StringIO()), str(tmp_path / "migrations"), template="async")
    config = Config()  # no ini file: the template's fileConfig() would reconfigure our logging
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("sqlalchemy.url", db_url.render_as_string(hide_password=False))

    with pytest.raises(RuntimeError, match=r"^env.py called asyncio.run\(\) inside the test's event loop: ") as failure:
        await upgrade(db_url, config)
    del failure
    gc.collect()  # the refused coroutine goes now, while its warning is filtered, not in a later test


@pytest.mark.asyncio
async def test_an_env_py_that_connects_elsewhere_is_refused(db_url, tmp_path, history):
    elsewhere = tmp_path / "elsewhere.db"
    env = history.ini.parent / "env.py"
    env.write_text(
        "from alembic import context\n"
        "from sqlalchemy import create_engine\n"
        "from recipes.demo.models import Base\n"
        f"engine = create_engine('sqlite:///{elsewhere}')\n"
        "with engine.begin() as connection:\n"
        "    context.configure(connection=connection, target_metadata=Base.metadata)\n"
        "    with context.begin_transaction():\n"
        "        context.run_migrations()\n"
    )

    with pytest.raises(RuntimeError, match=r"^env.py ran no statement on config.attributes\[\"connection\"\]: "):
        await upgrade(db_url, history.ini)
    assert elsewhere.exists()  # where the migrations went


@pytest.mark.asyncio
async def test_a_sync_env_py_from_the_template_never_touches_the_database_the_ini_names(
    empty_database, tmp_path
):
    """alembic init's generic env.py ignores the connection handed in and connects to the ini's
    sqlalchemy.url: while the recipe runs, that URL names the test database, not the user's."""
    ini = tmp_path / "alembic.ini"
    command.init(Config(ini, stdout=io.StringIO()), str(tmp_path / "migrations"), template="generic")
    named = tmp_path / "real.db"
    config = Config()  # as the ini would say, without its logging setup
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{named}")
    revision = Config(ini, stdout=io.StringIO())
    revision.set_main_option("script_location", str(tmp_path / "migrations"))
    command.revision(revision, "t", rev_id="0001")

    # Its own engine reaches the database it is handed the URL of (a throwaway one here, since
    # that engine commits): refused afterwards, never run on the database the ini names.
    with pytest.raises(RuntimeError, match=r"^env.py ran no statement on config.attributes"):
        await upgrade(empty_database, config)

    assert not named.exists(), "the migrations reached the database the ini names"
    assert config.get_main_option("sqlalchemy.url") == f"sqlite:///{named}"  # restored


def test_a_missing_ini_file_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^no Alembic configuration at {tmp_path / 'nope.ini'}$"):
        check_single_head(tmp_path / "nope.ini")


# -- the plugin: recipes_schema = alembic, in a user's project ---------------------------------

USER_ENV = '''\
import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from notes.models import Base

config = context.config


def do_run_migrations(connection):
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    engine = create_async_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


connectable = config.attributes.get("connection")
if connectable is None:
    asyncio.run(run_async_migrations())
else:
    do_run_migrations(connectable)
'''

USER_MODELS = '''\
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))
    pinned: Mapped[bool] = mapped_column(default=False)
'''

USER_REVISIONS = {
    "a1_notes.py": '''\
"""notes"""
from alembic import op
import sqlalchemy as sa

revision, down_revision, branch_labels, depends_on = "a1", None, None, None


def upgrade():
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("text", sa.String(200), nullable=False))


def downgrade():
    op.drop_table("notes")
''',
    "b2_pinned.py": '''\
"""notes.pinned"""
from alembic import op
import sqlalchemy as sa

revision, down_revision, branch_labels, depends_on = "b2", "a1", None, None


def upgrade():
    op.add_column("notes", sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("notes") as batch_op:
        batch_op.drop_column("pinned")
''',
}

USER_TESTS = '''\
import pytest
from sqlalchemy import inspect, select, text

from notes.models import Note


@pytest.mark.asyncio
async def test_1_the_schema_comes_from_the_migrations(db_session):
    assert await db_session.scalar(text("SELECT version_num FROM alembic_version")) == "b2"
    db_session.add(Note(text="migrations built me"))
    await db_session.commit()
    assert (await db_session.scalars(select(Note.text))).all() == ["migrations built me"]


@pytest.mark.asyncio
async def test_2_and_each_test_still_rolls_back(db_session):
    assert (await db_session.scalars(select(Note))).all() == []
'''


def _user_project(pytester: pytest.Pytester, schema_lines: str) -> None:
    pytester.makeini(
        "[pytest]\n"
        "asyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n" + schema_lines
    )
    pytester.mkpydir("notes")
    (pytester.path / "notes" / "models.py").write_text(USER_MODELS)
    migrations = pytester.path / "db" / "migrations"
    (migrations / "versions").mkdir(parents=True)
    (migrations / "env.py").write_text(USER_ENV)
    for name, source in USER_REVISIONS.items():
        (migrations / "versions" / name).write_text(source)
    (pytester.path / "db" / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/migrations\nsqlalchemy.url = sqlite+aiosqlite:///dev.db\n"
    )
    pytester.makepyfile(test_notes=USER_TESTS)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_project_builds_its_test_schema_with_its_own_migrations(backend, run_pytest, pytester, request):
    url = "sqlite+aiosqlite://" if backend == "sqlite" else request.getfixturevalue("pg_server_url").render_as_string(hide_password=False)
    _user_project(pytester, "recipes_schema = alembic\nrecipes_alembic_config = db/alembic.ini\n")

    result = run_pytest("--db-url", url)

    result.assert_outcomes(passed=2)
    assert not (pytester.path / "dev.db").exists()  # the ini's URL is never used


def test_the_default_is_still_create_all(run_pytest, pytester):
    pytester.makepyfile(
        """
        import pytest
        from sqlalchemy import inspect

        @pytest.mark.asyncio
        async def test_tables(db_connection):
            names = await db_connection.run_sync(lambda c: inspect(c).get_table_names())
            assert sorted(names) == ["posts", "users"]
        """
    )
    run_pytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("recipes_schema = migrations\n",
         "ERROR: recipes: recipes_schema = 'migrations' is not a way to build the schema: write create_all "
         "(the default) or alembic"),
        ("recipes_schema = alembic\n",
         "ERROR: recipes: recipes_schema = alembic, but there is no {root}/alembic.ini: set "
         "recipes_alembic_config = path/to/alembic.ini (relative to {root})"),
        ("recipes_schema = alembic\nrecipes_alembic_config = db/missing.ini\n",
         "ERROR: recipes: recipes_schema = alembic, but there is no {root}/db/missing.ini: set "
         "recipes_alembic_config = path/to/alembic.ini (relative to {root})"),
        ("recipes_schema = alembic\nrecipes_alembic_config = db/empty.ini\n",
         "ERROR: recipes: {root}/db/empty.ini: No 'script_location' key found in configuration."),
    ],
    ids=["unknown value", "no alembic.ini", "missing ini file", "ini without script_location"],
)
def test_bad_schema_configuration_is_one_line(lines, message, run_pytest, pytester):
    _user_project(pytester, lines)
    (pytester.path / "db" / "empty.ini").write_text("[alembic]\n")

    result = run_pytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == message.format(root=pytester.path)
    assert len([line for line in result.stderr.lines if line.strip()]) == 1


def test_alembic_not_installed_is_one_line(run_pytest, pytester):
    _user_project(pytester, "recipes_schema = alembic\nrecipes_alembic_config = db/alembic.ini\n")
    pytester.makeconftest(
        'import sys\nsys.modules["alembic"] = None  # as if not installed\n'
        'pytest_plugins = ["recipes.plugin"]\n'
    )

    result = run_pytest()

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        'ERROR: recipes: recipes_schema = alembic needs Alembic: pip install "testing-async-sqlalchemy[migrations]"'
    )


def test_a_failing_migration_is_reported_at_setup(run_pytest, pytester):
    _user_project(pytester, "recipes_schema = alembic\nrecipes_alembic_config = db/alembic.ini\n")
    broken = pytester.path / "db" / "migrations" / "versions" / "b2_pinned.py"
    broken.write_text(broken.read_text().replace('op.add_column("notes"', 'op.add_column("note"'))

    result = run_pytest()

    result.assert_outcomes(errors=2)  # the same error for each test, at setup
    result.stdout.fnmatch_lines(["*b2_pinned.py*in upgrade*", "E*no such table: note*"])
