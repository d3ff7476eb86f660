"""Constraint tests (recipes.constraints): which constraint failed, on every configured database.

Every test runs on each configured database and asserts what that dialect really does: where
SQLite and PostgreSQL differ (constraint names, foreign keys, lengths), the test says which is
which instead of skipping one of them. MySQL means MariaDB here, as the suite's server is;
where MySQL 8 reports otherwise (a CHECK's table, a key's table) the test says so.
"""

from __future__ import annotations

import textwrap

import pytest
from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from recipes.constraints import KINDS, expect_violation, read_violation
from recipes.demo.models import Base, Post, User
from recipes.demo.service import EmailTaken, InvalidPost, like_post, publish_post, register_user

pytestmark = pytest.mark.asyncio
METADATA = Base.metadata
NO_VIOLATION = "expected a violation of 'users.email', but the block ran without one"


def dialect(session_or_connection) -> str:
    return getattr(session_or_connection, "bind", session_or_connection).dialect.name


def mariadb(session_or_connection) -> bool:
    return bool(getattr(getattr(session_or_connection, "bind", session_or_connection).dialect, "is_mariadb", False))


async def seed(session) -> User:
    """Ada, with one post, flushed (not committed): what the expected violations must not undo."""
    ada = User(email="ada@example.com", name="ada", posts=[Post(title="Hello")])
    session.add(ada)
    await session.flush()
    return ada


async def counts(session) -> tuple[int, int]:
    users = await session.scalar(select(func.count()).select_from(User))
    posts = await session.scalar(select(func.count()).select_from(Post))
    return users, posts


# -- what each dialect reports ----------------------------------------------------------------

VIOLATIONS = {  # kind: (the rows, what PostgreSQL reports, what SQLite reports)
    "unique": (lambda ada: [User(email="ada@example.com", name="twin")],
               ("users_email_key", "users", ("email",)), (None, "users", ("email",))),
    "foreign_key": (lambda ada: [Post(author_id=ada.id + 1000, title="Orphan")],
                    ("posts_author_id_fkey", "posts", ("author_id",)), (None, None, ())),
    "not_null": (lambda ada: [Post(author_id=ada.id, title=None)],
                 (None, "posts", ("title",)), (None, "posts", ("title",))),
    "check": (lambda ada: [Post(author_id=ada.id, title="Hated", likes=-1)],
              ("ck_posts_likes_not_negative", "posts", ()),
              ("ck_posts_likes_not_negative", None, ())),
}


ON_MYSQL = {  # what MariaDB reports (read_violation alone: a unique key's columns are not asked)
    "unique": ("email", "users", ()),  # the server's own name of an unnamed key: its column's
    "foreign_key": ("posts_ibfk_1", "posts", ("author_id",)),
    "not_null": (None, "posts", ("title",)),
    "check": ("ck_posts_likes_not_negative", "posts", ()),
}


@pytest.mark.parametrize("kind", VIOLATIONS)
async def test_read_violation_says_what_the_dialect_reports(db_session, kind):
    ada = await seed(db_session)
    rows, on_postgresql, on_sqlite = VIOLATIONS[kind]
    db_session.add_all(rows(ada))

    # MariaDB and MySQL report a CHECK with an error code PyMySQL raises as OperationalError
    refused = OperationalError if dialect(db_session) == "mysql" and kind == "check" else IntegrityError
    with pytest.raises(refused) as caught:
        await db_session.flush()
    violation = read_violation(caught.value)

    assert violation is not None
    assert violation.kind == kind
    expected = {"sqlite": on_sqlite, "mysql": ON_MYSQL[kind]}.get(dialect(db_session), on_postgresql)
    assert (violation.constraint, violation.table, violation.columns) == expected
    # SQLAlchemy 2.0's asyncpg errors put "<class 'asyncpg.exceptions...'>: " before it
    if dialect(db_session) == "mysql":  # PyMySQL's str() is "(code, 'message')"
        assert violation.message == caught.value.orig.args[1]
    else:
        assert str(caught.value.orig).splitlines()[0].endswith(violation.message)
    if kind == "unique" and dialect(db_session) == "postgresql":
        assert str(violation) == (
            "unique violation of users_email_key on users.email "
            "('duplicate key value violates unique constraint \"users_email_key\"')")


async def test_a_value_too_long_is_refused_by_postgresql_and_stored_by_sqlite(db_session):
    db_session.add(User(email="x" * 200, name="long"))

    if dialect(db_session) == "sqlite":
        await db_session.flush()
        assert len(await db_session.scalar(select(User.email))) == 200
        return
    with pytest.raises(DBAPIError) as caught:
        await db_session.flush()
    assert caught.value.orig.sqlstate == "22001"
    violation = read_violation(caught.value)
    if dialect(db_session) == "mysql":  # strict mode (the default): 1406, naming the column
        assert (violation.kind, violation.constraint, violation.table, violation.columns) == (
            "too_long", None, "users", ("email",))
        assert violation.message == "Data too long for column 'email' at row 1"
        return
    assert (violation.kind, violation.constraint, violation.table, violation.columns) == (
        "too_long", None, None, ())
    assert violation.message == "value too long for type character varying(64)"


async def test_read_violation_is_none_for_other_errors(db_session):
    with pytest.raises(DBAPIError) as caught:
        await db_session.execute(text("SELECT * FROM no_such_table"))

    assert read_violation(caught.value) is None
    await db_session.rollback()


# -- expect_violation passes, and the test goes on --------------------------------------------

PORTABLE = {  # targets written once, for both dialects
    "unique": "users.email",
    "foreign_key": "posts.author_id",
    "not_null": "posts.title",
    "check": "ck_posts_likes_not_negative",
}


@pytest.mark.parametrize("kind", VIOLATIONS)
async def test_expect_violation_passes_and_the_test_goes_on(db_session, kind):
    ada = await seed(db_session)

    target = PORTABLE[kind]
    async with expect_violation(db_session, target, kind=kind, metadata=METADATA) as violation:
        db_session.add_all(VIOLATIONS[kind][0](ada))

    assert violation.kind == kind
    assert await counts(db_session) == (1, 1)  # Ada and her post stay
    db_session.add(Post(author_id=ada.id, title="After"))  # and the session is usable
    await db_session.flush()
    assert await counts(db_session) == (1, 2)


async def test_without_a_savepoint_the_session_refuses_to_go_on(db_session):
    """What expect_violation saves a test from: after the failed flush the session refuses
    everything, and its rollback takes the earlier rows with it."""
    await seed(db_session)
    db_session.add(User(email="ada@example.com", name="twin"))
    with pytest.raises(IntegrityError):
        await db_session.flush()

    with pytest.raises(Exception, match="previous exception during flush") as caught:
        await counts(db_session)
    assert type(caught.value).__name__ == "PendingRollbackError"
    await db_session.rollback()
    assert await counts(db_session) == (0, 0)


async def test_the_block_may_flush_or_commit_itself(db_session):
    ada = await seed(db_session)

    async with expect_violation(db_session, "users.email"):
        db_session.add(User(email="ada@example.com", name="twin"))
        await db_session.flush()
    async with expect_violation(db_session, "ck_posts_likes_not_negative"):
        ada.posts[0].likes = -1
        await db_session.commit()

    assert await counts(db_session) == (1, 1)
    await db_session.refresh(ada.posts[0])
    assert ada.posts[0].likes == 0


async def test_only_the_violating_rows_of_the_block_go(db_session):
    ada = await seed(db_session)

    async with expect_violation(db_session, "posts.title"):
        db_session.add_all([Post(author_id=ada.id, title="Fine"),
                            Post(author_id=ada.id, title=None)])

    assert await counts(db_session) == (1, 1)  # the block's valid post went with the savepoint


async def test_on_a_connection(db_connection):
    await db_connection.execute(insert(User).values(id=1, email="ada@example.com", name="ada"))

    async with expect_violation(db_connection, "users.email") as violation:
        await db_connection.execute(insert(User).values(email="ada@example.com", name="twin"))

    assert violation.kind == "unique"
    # On PostgreSQL the connection's transaction would be aborted without the savepoint.
    await db_connection.execute(insert(User).values(email="grace@example.com", name="grace"))
    assert await db_connection.scalar(select(func.count()).select_from(User)) == 2


async def test_a_foreign_key_that_still_has_rows_pointing_at_it(db_connection):
    await db_connection.execute(insert(User).values(id=1, email="ada@example.com", name="ada"))
    await db_connection.execute(insert(Post).values(author_id=1, title="Hello"))

    async with expect_violation(db_connection, "posts.author_id", metadata=METADATA) as violation:
        await db_connection.execute(delete(User).where(User.id == 1))

    assert violation.kind == "foreign_key"
    # PostgreSQL's detail names the referenced key, users.id: the recipe does not take it for
    # the referencing columns. SQLite says nothing.
    # MySQL names the constraint, the referencing table and its columns.
    assert violation.columns == (("author_id",) if dialect(db_connection) == "mysql" else ())
    assert violation.table == (None if dialect(db_connection) == "sqlite" else "posts")


async def test_a_value_too_long_where_the_database_enforces_it(db_session):
    await seed(db_session)
    expecting = expect_violation(db_session, "users.email", kind="too_long", metadata=METADATA)

    if dialect(db_session) == "sqlite":
        with pytest.raises(AssertionError) as failed:
            async with expecting:
                db_session.add(User(email="x" * 200, name="long"))
        assert str(failed.value) == (
            "expected a violation of 'users.email' (too_long), but the block ran without one "
            "(SQLite does not enforce the length of String(n) or VARCHAR(n))")
    else:
        async with expecting as violation:
            db_session.add(User(email="x" * 200, name="long"))
        assert violation.kind == "too_long"
    assert (await counts(db_session))[0] == (2 if dialect(db_session) == "sqlite" else 1)


async def test_a_value_too_long_for_another_column_does_not_match(db_session):
    ada = await seed(db_session)

    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "users.email", metadata=METADATA):
            db_session.add(Post(author_id=ada.id, title="t" * 121))  # String(120)

    if dialect(db_session) == "sqlite":
        assert str(failed.value) == NO_VIOLATION
    elif dialect(db_session) == "mysql":
        assert str(failed.value) == (
            "expected a violation of 'users.email', but the database reported a value too long "
            "on posts.title (\"Data too long for column 'title' at row 1\")")
    else:
        assert str(failed.value) == (
            "expected a violation of 'users.email', but the database reported a value too long "
            "('value too long for type character varying(120)')")


# -- where a dialect reports too little --------------------------------------------------------

async def test_a_default_constraint_name_is_known_to_postgresql_only(db_session):
    await seed(db_session)

    if dialect(db_session) == "postgresql":
        async with expect_violation(db_session, "users_email_key") as violation:
            db_session.add(User(email="ada@example.com", name="twin"))
        assert violation.constraint == "users_email_key"
        return
    if dialect(db_session) == "mysql":  # the server's own name for it is another
        with pytest.raises(AssertionError) as failed:
            async with expect_violation(db_session, "users_email_key", metadata=METADATA):
                db_session.add(User(email="ada@example.com", name="twin"))
        assert str(failed.value) == (
            "expected a violation of 'users_email_key', but the database reported a unique "
            "violation of email on users (\"Duplicate entry 'ada@example.com' for key 'email'\")")
        return
    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "users_email_key", metadata=METADATA):
            db_session.add(User(email="ada@example.com", name="twin"))
    assert str(failed.value) == (
        "expected a violation of 'users_email_key', but the database reported a unique violation "
        "on users.email ('UNIQUE constraint failed: users.email'); it names no constraint, and "
        "'users_email_key' is not a constraint of the metadata: expect it as 'table.column', "
        "or pass the metadata")


async def test_a_foreign_key_on_sqlite_needs_the_metadata(db_session):
    ada = await seed(db_session)
    orphan = Post(author_id=ada.id + 1000, title="Orphan")

    if dialect(db_session) in ("postgresql", "mysql"):  # the report names the table and the column
        async with expect_violation(db_session, "posts.author_id") as violation:
            db_session.add(orphan)
        assert violation.constraint == (
            "posts_ibfk_1" if dialect(db_session) == "mysql" else "posts_author_id_fkey")
        return
    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "posts.author_id"):
            db_session.add(orphan)
    assert str(failed.value) == (
        "expected a violation of 'posts.author_id', but the database reported a foreign key "
        "violation ('FOREIGN KEY constraint failed'); it does not say enough to relate it to "
        "'posts.author_id': pass the metadata")
    async with expect_violation(db_session, "posts.author_id", metadata=METADATA):
        db_session.add(Post(author_id=ada.id + 1000, title="Orphan"))


async def test_the_metadata_does_not_make_a_foreign_key_of_any_column(db_session):
    ada = await seed(db_session)

    with pytest.raises(AssertionError, match="expected a violation of 'posts.title', but the "
                       "database reported a foreign key violation"):
        async with expect_violation(db_session, "posts.title", metadata=METADATA):
            db_session.add(Post(author_id=ada.id + 1000, title="Orphan"))


THINGS = MetaData()
Table(
    "things", THINGS,
    Column("id", Integer, primary_key=True),
    Column("a", Integer), Column("b", Integer), Column("code", String(10)),
    UniqueConstraint("a", "b", name="uq_things_a_b"),
    Index("ix_things_code", "code", unique=True),
    CheckConstraint("a > 0"),  # no name: PostgreSQL makes one up, SQLite quotes the expression
)


# MySQL commits before CREATE TABLE and CREATE INDEX, not before CREATE TEMPORARY TABLE: the
# same table, temporary, its unique index inline.
THINGS_MYSQL = MetaData()
Table(
    "things", THINGS_MYSQL,
    Column("id", Integer, primary_key=True),
    Column("a", Integer), Column("b", Integer), Column("code", String(10)),
    UniqueConstraint("a", "b", name="uq_things_a_b"),
    UniqueConstraint("code", name="ix_things_code"),
    CheckConstraint("a > 0"),
    prefixes=["TEMPORARY"],
)


async def test_several_columns_named_constraints_and_unique_indexes(db_connection):
    on_mysql = dialect(db_connection) == "mysql"
    # inside the test's transaction
    await db_connection.run_sync((THINGS_MYSQL if on_mysql else THINGS).create_all)
    things = THINGS.tables["things"]
    await db_connection.execute(insert(things).values(a=1, b=1, code="x"))

    metadata = THINGS if on_mysql else None  # MySQL names the key only: the metadata has it
    async with expect_violation(db_connection, "things.a, things.b", metadata=metadata) as violation:
        await db_connection.execute(insert(things).values(a=1, b=1))
    async with expect_violation(db_connection, "uq_things_a_b", metadata=THINGS):
        await db_connection.execute(insert(things).values(a=1, b=1))
    async with expect_violation(db_connection, "ix_things_code", metadata=THINGS):
        await db_connection.execute(insert(things).values(a=2, b=2, code="x"))
    unnamed_check = {"sqlite": "a > 0", "postgresql": "things_a_check"}.get(
        dialect(db_connection), "CONSTRAINT_1" if mariadb(db_connection) else "things_chk_1")
    async with expect_violation(db_connection, unnamed_check):
        await db_connection.execute(insert(things).values(a=0, b=0))

    assert violation.columns == ("a", "b")
    assert await db_connection.scalar(select(func.count()).select_from(things)) == 1


# -- failure messages --------------------------------------------------------------------------

async def test_another_constraint_than_the_expected_one(db_session):
    ada = await seed(db_session)

    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "ck_posts_likes_not_negative"):
            db_session.add(Post(author_id=ada.id, likes=-1))  # no title: NOT NULL fails first

    words = {"sqlite": "NOT NULL constraint failed: posts.title",
             "mysql": "Column 'title' cannot be null"}.get(
        dialect(db_session), 'null value in column "title" of relation "posts" violates not-null constraint')
    assert str(failed.value) == (
        "expected a violation of 'ck_posts_likes_not_negative', but the database reported a "
        f"not-null violation on posts.title ({words!r})")
    assert failed.value.__suppress_context__  # the message says it all
    assert await counts(db_session) == (1, 1)  # rolled back to the savepoint all the same


async def test_the_right_columns_but_another_kind(db_session):
    await seed(db_session)

    with pytest.raises(AssertionError, match=r"expected a violation of 'posts.author_id' "
                       r"\(foreign_key\), but the database reported a not-null violation on "
                       r"posts.author_id"):
        async with expect_violation(db_session, "posts.author_id", kind="foreign_key"):
            db_session.add(Post(author_id=None, title="Nobody's"))


async def test_no_violation_at_all(db_session):
    await seed(db_session)

    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "users.email"):
            db_session.add(User(email="grace@example.com", name="grace"))

    assert str(failed.value) == NO_VIOLATION
    assert await counts(db_session) == (2, 1)  # the savepoint was released, not rolled back


async def test_another_database_error(db_session):
    await seed(db_session)

    with pytest.raises(AssertionError) as failed:
        async with expect_violation(db_session, "users.email"):
            await db_session.execute(text("SELECT * FROM no_such_table"))

    assert str(failed.value).startswith(
        "expected a violation of 'users.email', but the database raised ")
    assert "no_such_table" in str(failed.value)
    assert isinstance(failed.value.__cause__, DBAPIError)
    assert await counts(db_session) == (1, 1)  # rolled back to the savepoint: usable


async def test_an_error_in_rows_pending_before_the_block_is_not_the_blocks(db_session):
    await seed(db_session)
    db_session.add(User(email="ada@example.com", name="twin"))  # pending, not flushed

    with pytest.raises(IntegrityError):
        async with expect_violation(db_session, "users.email"):
            pass  # nothing here violates anything

    await db_session.rollback()


async def test_other_exceptions_pass_through_and_roll_back_the_block(db_session):
    await seed(db_session)

    with pytest.raises(ZeroDivisionError):
        async with expect_violation(db_session, "users.email"):
            db_session.add(User(email="grace@example.com", name="grace"))
            await db_session.flush()
            raise ZeroDivisionError  # a bug of the block's own

    assert await counts(db_session) == (1, 1)


async def test_mistakes_in_the_expectation_are_refused_before_the_block(db_session):
    with pytest.raises(ValueError, match="kind='unique_key': use one of unique, foreign_key"):
        async with expect_violation(db_session, "users.email", kind="unique_key"):
            pass
    with pytest.raises(ValueError, match="'users.mail': the metadata has no such table or column"):
        async with expect_violation(db_session, "users.mail", metadata=METADATA):
            pass
    assert set(KINDS) == {"unique", "foreign_key", "not_null", "check", "too_long"}


# -- the service's domain errors, on the real database -----------------------------------------

async def test_the_service_translates_violations_into_domain_errors(db_session):
    ada = await register_user(db_session, "ada@example.com")
    ada_id, post_id = ada.id, (await publish_post(db_session, ada.id, "Hello")).id

    with pytest.raises(EmailTaken):
        await register_user(db_session, "ada@example.com")
    with pytest.raises(InvalidPost):
        await publish_post(db_session, ada_id + 1000, "Orphan")
    # on MySQL and MariaDB the CHECK violation is an OperationalError: a domain error all the same
    with pytest.raises(InvalidPost, match="ck_posts_likes_not_negative"):
        await like_post(db_session, post_id, delta=-1)

    assert await counts(db_session) == (1, 1)  # what was committed before stays
    assert await like_post(db_session, post_id) == 1



# -- as pytest reports it ----------------------------------------------------------------------

async def test_pytest_shows_the_message_at_the_test_line(run_pytest, db_url, request):
    raw = "sqlite+aiosqlite://"
    if db_url.get_backend_name() == "postgresql":
        raw = request.getfixturevalue("pg_server_url").render_as_string(hide_password=False)
    if db_url.get_backend_name() == "mysql":
        raw = request.getfixturevalue("mysql_server_url").render_as_string(hide_password=False)
    run_pytest_file = textwrap.dedent("""
        import pytest
        from recipes.constraints import expect_violation
        from recipes.demo.models import Post, User

        @pytest.mark.asyncio
        async def test_likes(db_session):
            ada = User(email="ada@example.com", name="ada")
            db_session.add(ada)
            await db_session.flush()
            async with expect_violation(db_session, "ck_posts_likes_not_negative"):
                db_session.add(Post(author_id=ada.id, likes=-1))
    """)
    request.getfixturevalue("pytester").makepyfile(test_likes=run_pytest_file)

    result = run_pytest("--db-url", raw, "--tb=short")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*async with expect_violation(db_session, \"ck_posts_likes_not_negative\"):",
        ("E   AssertionError: expected a violation of 'ck_posts_likes_not_negative', but the "
         "database reported a not-null violation on posts.title (*"),
    ])
    assert "constraints.py" not in result.stdout.str()  # the recipe's frames are hidden
