"""Query counts (recipes.queries and the plugin's count_queries / assert_max_queries fixtures).

Every test runs on each configured database. The data is seeded through a session of its own
(``db_sessionmaker``), so the session under test starts with an empty identity map and loads
what it reads.
"""

from __future__ import annotations

import gc
import textwrap

import pytest
import sqlalchemy
from sqlalchemy import func, select, text
from sqlalchemy.exc import InvalidRequestError, MissingGreenlet, StatementError
from sqlalchemy.orm import joinedload, selectinload

from recipes.demo.models import Post, User
from recipes.demo.service import register_user
from recipes.queries import assert_max_queries as assert_max_queries_on
from recipes.queries import count_queries as count_queries_on
from recipes.queries import forbid_lazy_loads

SQLALCHEMY_2_1 = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (2, 1)


async def seed(db_sessionmaker, authors: int = 3, posts: int = 2) -> None:
    async with db_sessionmaker() as session:
        session.add_all(
            User(email=f"author{i}@example.com", name=f"author{i}",
                 posts=[Post(title=f"post {i}.{j}") for j in range(posts)])
            for i in range(authors)
        )
        await session.commit()


async def posts_per_author_lazily(session) -> dict[str, int]:
    """The N+1 shape: one query for the authors, then one per author for the posts."""
    users = (await session.scalars(select(User).order_by(User.id))).all()
    counts = {}
    for user in users:
        posts = await session.scalars(select(Post).where(Post.author_id == user.id))
        counts[user.email] = len(posts.all())
    return counts


@pytest.mark.asyncio
async def test_counts_each_statement_with_its_parameters(db_session, count_queries):
    with count_queries() as queries:
        await db_session.scalar(select(User).where(User.email == "ada@example.com"))
        await db_session.execute(text("SELECT 1"))

    assert len(queries) == 2
    assert queries.statements[0].startswith("SELECT users.id, users.email")
    assert "ada@example.com" in str(queries[0].parameters)
    assert queries.statements[1] == "SELECT 1"
    assert not queries[0].executemany


@pytest.mark.asyncio
async def test_savepoints_are_left_out_unless_asked(db_session, count_queries):
    with count_queries() as default, count_queries(include_savepoints=True) as everything:
        await register_user(db_session, "ada@example.com")  # commit(): a released savepoint

    assert [s.split()[0] for s in default.statements] == ["INSERT"]
    assert [" ".join(s.split()[:2]) for s in everything.statements] == [
        "SAVEPOINT sa_savepoint_1",
        "INSERT INTO",
        "RELEASE SAVEPOINT",
    ]
    assert default[0].parameters == everything[1].parameters
    assert "ada@example.com" in str(default[0].parameters)


@pytest.mark.asyncio
async def test_a_rollback_to_a_savepoint_is_a_savepoint_statement(db_session, count_queries):
    with count_queries() as default, count_queries(include_savepoints=True) as everything:
        nested = await db_session.begin_nested()
        await db_session.execute(text("SELECT 1"))
        await nested.rollback()

    assert default.statements == ["SELECT 1"]
    # the session's savepoint in the test's transaction, begin_nested()'s inside it
    assert [" ".join(s.split()[:3]) for s in everything.statements] == [
        "SAVEPOINT sa_savepoint_1",
        "SAVEPOINT sa_savepoint_2",
        "SELECT 1",
        "ROLLBACK TO SAVEPOINT",
    ]


@pytest.mark.asyncio
async def test_n_plus_one_and_its_fixes(db_session, db_sessionmaker, count_queries):
    await seed(db_sessionmaker, authors=3)

    with count_queries() as lazy:
        assert await posts_per_author_lazily(db_session) == {
            f"author{i}@example.com": 2 for i in range(3)
        }
    db_session.expunge_all()
    with count_queries() as selectin:
        users = (await db_session.scalars(select(User).options(selectinload(User.posts)))).all()
    db_session.expunge_all()
    with count_queries() as joined:
        result = await db_session.scalars(select(User).options(joinedload(User.posts)))
        joined_users = result.unique().all()

    assert (len(lazy), len(selectin), len(joined)) == (1 + 3, 2, 1)
    assert [len(u.posts) for u in users] == [len(u.posts) for u in joined_users] == [2, 2, 2]


@pytest.mark.asyncio
async def test_assert_max_queries_passes_within_the_limit(
    db_session, db_sessionmaker, assert_max_queries
):
    await seed(db_sessionmaker)

    with assert_max_queries(2) as queries:
        users = (await db_session.scalars(select(User).options(selectinload(User.posts)))).all()

    assert len(queries) == 2
    assert sum(len(user.posts) for user in users) == 6


@pytest.mark.asyncio
async def test_assert_max_queries_fails_with_the_numbered_statements(
    db_session, db_sessionmaker, assert_max_queries
):
    await seed(db_sessionmaker, authors=3)

    with pytest.raises(AssertionError) as failure:
        with assert_max_queries(2, info="posts per author"):
            await posts_per_author_lazily(db_session)

    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "expected at most 2 statements, but the block sent 4 statements (posts per author):"
    )
    assert lines[1].startswith("1. SELECT users.id, users.email, users.name, users.is_admin")
    assert lines[2].startswith("   parameters: ")
    numbered = [line for line in lines if line[:1].isdigit()]
    assert [line.split(". ")[0] for line in numbered] == ["1", "2", "3", "4"]
    assert all("FROM posts" in line for line in numbered[1:])
    assert lines[-1] == "(savepoints not counted: include_savepoints=True counts them)"


@pytest.mark.asyncio
async def test_a_block_that_raises_is_not_checked(db_session, assert_max_queries):
    with pytest.raises(ZeroDivisionError):
        with assert_max_queries(0):
            await db_session.execute(text("SELECT 1"))
            1 / 0


@pytest.mark.asyncio
async def test_nothing_is_recorded_after_the_block(db_session, count_queries):
    with count_queries() as queries:
        await db_session.execute(text("SELECT 1"))
    await db_session.execute(text("SELECT 2"))

    assert queries.statements == ["SELECT 1"]


@pytest.mark.asyncio
async def test_only_the_tests_connection_is_counted(db_session, db_engine, count_queries):
    with count_queries() as queries:
        async with db_engine.connect() as other:  # outside the test's transaction
            await other.execute(text("SELECT 'other'"))
        await db_session.execute(text("SELECT 'mine'"))

    assert queries.statements == ["SELECT 'mine'"]


@pytest.mark.asyncio
async def test_on_an_engine_every_connection_counts(db_engine):
    with count_queries_on(db_engine) as queries:
        async with db_engine.connect() as first, db_engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 2"))

    assert queries.statements == ["SELECT 1", "SELECT 2"]  # SQLite's BEGIN is left out


@pytest.mark.asyncio
async def test_executemany_is_one_call_with_every_parameter_set(db_connection, count_queries):
    rows = [{"email": f"user{i}@example.com", "name": f"user{i}"} for i in range(20)]
    with count_queries() as queries:
        await db_connection.execute(User.__table__.insert(), rows)

    assert len(queries) == 1 and queries[0].executemany
    assert len(queries[0].parameters) == 20
    shown = queries.report()
    assert "parameters (executemany): [" in shown and "...]" in shown  # long lists are shortened
    assert await db_connection.scalar(select(func.count()).select_from(User)) == 20


@pytest.mark.asyncio
async def test_a_flush_of_new_rows_is_one_insert_per_row_on_sqlite_only(
    db_session, db_url, count_queries
):
    with count_queries() as queries:
        db_session.add_all(User(email=f"user{i}@example.com", name=f"user{i}") for i in range(3))
        await db_session.flush()

    # SQLAlchemy's "insertmanyvalues" batches the rows into one INSERT on PostgreSQL (up to
    # 1,000 a statement); on SQLite, for rows whose ids the database generates, one per row.
    assert len(queries) == (3 if db_url.get_backend_name() == "sqlite" else 1)
    assert all(query.executemany and query.statement.startswith("INSERT") for query in queries)


@pytest.mark.asyncio
async def test_the_recipe_works_on_a_sync_connection_too(db_connection):
    def run(sync_connection):
        with assert_max_queries_on(sync_connection, 1) as queries:
            sync_connection.execute(text("SELECT 1"))
        return queries.statements

    assert await db_connection.run_sync(run) == ["SELECT 1"]


@pytest.mark.asyncio(loop_scope="session")
async def test_on_a_session_loop(db_session, db_sessionmaker, assert_max_queries):
    await seed(db_sessionmaker, authors=4)

    with assert_max_queries(1) as queries:
        result = await db_session.scalars(select(User).options(joinedload(User.posts)))
        assert len(result.unique().all()) == 4
    with pytest.raises(AssertionError, match="expected at most 2 statements, but the block sent 5"):
        with assert_max_queries(2):
            await posts_per_author_lazily(db_session)

    assert len(queries) == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_on_a_module_loop(db_session, count_queries):
    with count_queries() as queries:
        await register_user(db_session, "ada@example.com")

    assert [s.split()[0] for s in queries.statements] == ["INSERT"]


@pytest.mark.asyncio
async def test_forbid_lazy_loads_makes_a_stray_lazy_load_raise(db_session, db_sessionmaker):
    await seed(db_sessionmaker, authors=2)
    remove = forbid_lazy_loads(db_session)

    eager = (await db_session.scalars(select(User).options(selectinload(User.posts)))).all()
    assert [len(user.posts) for user in eager] == [2, 2]  # eager loads still work
    post = eager[0].posts[0]
    not_loaded = "'Post.author' is not available due to lazy='raise'"
    with pytest.raises(InvalidRequestError, match=not_loaded):
        post.author  # not loaded by the query: it would have been a lazy load

    remove()
    db_session.expunge_all()
    user = await db_session.scalar(select(User).order_by(User.id).limit(1))
    assert len(await db_session.run_sync(lambda _: user.posts)) == 2  # lazy loading is back


@pytest.mark.asyncio
async def test_a_lazy_load_raises_missing_greenlet_wrapped_or_not_by_driver(
    db_session, db_sessionmaker, db_url
):
    """What the docs say to assert, and which drivers wrap MissingGreenlet in StatementError."""
    await seed(db_sessionmaker, authors=1)
    user = await db_session.scalar(select(User))

    missing_greenlet = "greenlet_spawn has not been called"
    with pytest.raises((MissingGreenlet, StatementError), match=missing_greenlet) as caught:
        user.posts

    driver = db_url.get_driver_name()
    # SQLAlchemy 2.0 wraps it only for the MySQL drivers (seen on aiomysql), and leaves no
    # coroutine unawaited
    wrapped = {"asyncpg": False, "aiosqlite": SQLALCHEMY_2_1, "psycopg": SQLALCHEMY_2_1,
               "aiomysql": True, "asyncmy": True}[driver]
    assert isinstance(caught.value, StatementError) is wrapped
    assert isinstance(getattr(caught.value, "orig", caught.value), MissingGreenlet)
    if driver == "aiosqlite" and SQLALCHEMY_2_1:
        # aiosqlite's cursor() coroutine, made and never awaited, is freed with the traceback:
        # here, rather than with a warning in whichever test runs when the collector gets to it.
        del caught
        with pytest.warns(RuntimeWarning, match="coroutine 'Connection.cursor' was never awaited"):
            gc.collect()


# -- the plugin's fixtures in a project of their own, on SQLite and PostgreSQL -----------------

N_PLUS_ONE_PROJECT = """
    import pytest
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload
    from recipes.demo.models import Post, User

    async def seed(db_sessionmaker):
        async with db_sessionmaker() as session:
            session.add_all(User(email=f"u{i}@example.com", name=f"u{i}", posts=[Post(title="hi")])
                            for i in range(3))
            await session.commit()

    @pytest.mark.asyncio
    async def test_n_plus_one(db_session, db_sessionmaker, assert_max_queries):
        await seed(db_sessionmaker)
        with assert_max_queries(2):
            for user in (await db_session.scalars(select(User).order_by(User.id))).all():
                await db_session.scalars(select(Post).where(Post.author_id == user.id))

    @pytest.mark.asyncio
    async def test_selectinload(db_session, db_sessionmaker, assert_max_queries):
        await seed(db_sessionmaker)
        with assert_max_queries(2):
            users = (await db_session.scalars(select(User).options(selectinload(User.posts)))).all()
        assert [len(user.posts) for user in users] == [1, 1, 1]

    @pytest.mark.asyncio(loop_scope="session")
    async def test_savepoints_on_request(db_session, count_queries):
        with count_queries(include_savepoints=True) as queries:
            db_session.add(User(email="ada@example.com", name="ada"))
            await db_session.commit()
        assert [s.split()[0] for s in queries.statements] == ["SAVEPOINT", "INSERT", "RELEASE"]
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_n_plus_one_fails_with_the_numbered_statements(backend, run_pytest, pytester, request):
    url = "sqlite+aiosqlite://"
    if backend == "postgresql":
        url = request.getfixturevalue("pg_server_url").render_as_string(hide_password=False)
    pytester.makepyfile(test_posts=textwrap.dedent(N_PLUS_ONE_PROJECT))

    result = run_pytest("--db-url", url)

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*with assert_max_queries(2):*",
            "E*AssertionError: expected at most 2 statements, but the block sent 4 statements:",
            "E*1. SELECT users.id, users.email, users.name, users.is_admin FROM users"
            " ORDER BY users.id",
            "E*parameters: *",
            "E*2. SELECT posts.id, posts.author_id, posts.title, posts.body, posts.likes FROM posts"
            " WHERE posts.author_id = *",
            "E*parameters: *1*",
            "E*3. SELECT posts.id*",
            "E*4. SELECT posts.id*",
            "E*(savepoints not counted: include_savepoints=True counts them)",
            "FAILED test_posts.py::test_n_plus_one - AssertionError: expected at most 2*",
        ]
    )
