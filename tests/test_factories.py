"""Test data factories (recipes.factories and the db_factories fixture), on every database.

The in-process tests run once per configured database through ``db_factories``; what a user's
project sees (loop scopes, rows gone after each test, the seed in a failure report, a project
without the extra) is checked in fresh projects run by pytest in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import types

import factory
import pytest
from polyfactory import Use
from polyfactory.factories.base import BaseFactory
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyPersistenceMethod
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from recipes.demo.models import Post, User
from recipes.factories import (
    AsyncSQLAlchemyFactory,
    AsyncSQLAlchemyPolyfactory,
    FactorySessionError,
    bind_session,
    bound_session,
    random_state,
    seed_factories,
    seed_for,
    set_random_state,
)


class UserFactory(AsyncSQLAlchemyFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("first_name")

    class Params:
        admin = factory.Trait(is_admin=True)


class PostFactory(AsyncSQLAlchemyFactory):
    class Meta:
        model = Post

    author = factory.SubFactory(UserFactory)
    title = factory.Faker("sentence", nb_words=4)


class AuthorFactory(UserFactory):
    posts = factory.RelatedFactoryList(PostFactory, "author", size=2)


class WriterFactory(UserFactory):
    @factory.post_generation
    def titles(self, create, extracted, **kwargs):
        if not create:  # as factory_boy's documentation writes hooks
            return
        for title in extracted or []:
            bound_session(PostFactory).add(PostFactory.build(author=self, title=title))


class FlushingUserFactory(UserFactory):
    class Meta:
        sqlalchemy_session_persistence = "flush"


class CommittingUserFactory(UserFactory):
    class Meta:
        sqlalchemy_session_persistence = "commit"


class UserByEmailFactory(UserFactory):
    class Meta:
        sqlalchemy_get_or_create = ("email",)


class PolyUserFactory(AsyncSQLAlchemyPolyfactory[User]):
    __set_as_default_factory_for_type__ = True  # it makes every User, a post's author too
    email = Use(lambda: f"{BaseFactory.__faker__.uuid4()}@example.com")  # unique, and seeded


class PolyPostFactory(AsyncSQLAlchemyPolyfactory[Post]):
    pass


def _count(model: type) -> object:
    return select(func.count()).select_from(model)


def _statements(db_connection) -> list[str]:
    """The statements sent on the test's connection from now on (savepoints left out)."""
    sent: list[str] = []

    @event.listens_for(db_connection.sync_connection, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):
        if "SAVEPOINT" not in statement:
            sent.append(" ".join(statement.split()[:3]))

    return sent


# -- factory_boy -------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_create_flushes_keys_and_defaults_into_the_test_session(
    db_factories, db_session, observe
):
    user = await UserFactory.create()

    assert user.id is not None and user.is_admin is False  # the primary key and the default
    assert user in db_session and db_session.is_active  # the test's session, still open
    assert user.posts == []  # loaded empty: no lazy load, which an AsyncSession refuses
    assert await db_session.scalar(_count(User)) == 1
    assert await observe("users") == 0  # flushed, never committed


@pytest.mark.asyncio
async def test_a_subfactory_parent_is_inserted_first_in_one_flush(
    db_factories, db_connection, db_session
):
    flushes = []
    event.listen(db_session.sync_session, "after_flush", lambda *_: flushes.append(1))
    sent = _statements(db_connection)

    post = await PostFactory.create()

    assert sent == ["INSERT INTO users", "INSERT INTO posts"] and len(flushes) == 1
    assert post.author_id == post.author.id is not None
    assert post.author.posts == [post]


@pytest.mark.asyncio
async def test_related_factory_children_and_batches_persist(db_factories, db_session):
    author = await AuthorFactory.create()
    users = await UserFactory.create_batch(3, admin=True)

    assert len(author.posts) == 2 and all(p.id and p.author_id == author.id for p in author.posts)
    assert [u.is_admin for u in users] == [True, True, True]
    assert len({u.id for u in users}) == 3
    assert await db_session.scalar(_count(User)) == 1 + 3 + 0  # RelatedFactory: no extra users
    assert await db_session.scalar(_count(Post)) == 2


@pytest.mark.asyncio
async def test_post_generation_hooks_run_with_create_true(db_factories, db_session):
    writer = await WriterFactory.create(titles=["first", "second"])

    titles = [(p.title, p.author_id) for p in writer.posts]
    assert titles == [("first", writer.id), ("second", writer.id)]
    assert all(p.id is not None for p in writer.posts)
    assert await db_session.scalar(_count(Post)) == 2


@pytest.mark.asyncio
async def test_the_docs_example(db_factories):
    post = await PolyPostFactory.create_async(author=await UserFactory.create())
    assert post.id is not None and post.author_id == post.author.id


@pytest.mark.asyncio
async def test_flush_persistence_works_and_get_or_create_queries(db_factories):
    flushed = await FlushingUserFactory.create()
    first = await UserByEmailFactory.create(email="same@example.com")
    again = await UserByEmailFactory.create(email="same@example.com")

    assert flushed.id is not None
    assert again is first and first.id is not None


@pytest.mark.asyncio
async def test_a_factory_that_would_commit_gets_one_clear_error(db_factories, db_session):
    with pytest.raises(FactorySessionError) as caught:
        await CommittingUserFactory.create()

    assert str(caught.value) == (
        'CommittingUserFactory sets Meta.sqlalchemy_session_persistence = "commit", but a '
        "factory never commits the test's session: inside the test's transaction a commit only "
        "releases a savepoint, and the rows still roll back when the test ends. Remove it: the "
        "factory flushes, which sets primary keys and defaults."
    )
    assert await db_session.scalar(_count(User)) == 0


@pytest.mark.asyncio
async def test_a_session_in_meta_gets_one_clear_error(db_factories, db_session):
    class OwnSessionFactory(UserFactory):
        class Meta:
            sqlalchemy_session = db_session

    with pytest.raises(FactorySessionError) as caught:
        await OwnSessionFactory.create()
    assert str(caught.value) == (
        "OwnSessionFactory sets Meta.sqlalchemy_session, but its rows go into the session bound "
        "for the test (the db_factories fixture, or bind_session()): remove it"
    )


@pytest.mark.asyncio
async def test_without_a_bound_session_the_error_says_what_to_do():
    expected = (
        "UserFactory has no session to create rows in: request the db_factories fixture in the "
        "test (or in a fixture it uses), or bind one with recipes.factories.bind_session(session)"
    )
    with pytest.raises(FactorySessionError) as caught:
        await UserFactory.create()
    assert str(caught.value) == expected
    with pytest.raises(FactorySessionError, match="PolyUserFactory has no session"):
        await PolyUserFactory.create_async()
    assert UserFactory.build().id is None  # build() needs no session


def test_bind_session_nests_and_restores():
    outer, inner = AsyncSession(), AsyncSession()
    with bind_session(outer):
        with bind_session(inner):
            assert bound_session(UserFactory) is inner
        assert bound_session(UserFactory) is outer
    with pytest.raises(FactorySessionError):
        bound_session(UserFactory)


# -- polyfactory -------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_polyfactory_keys_come_from_the_database_and_real_parents(
    db_factories, db_session, observe
):
    built = PolyPostFactory.build()
    assert built.id is None and built.author_id is None and built.author.id is None

    post = await PolyPostFactory.create_async()

    assert post.id is not None and post.author_id == post.author.id is not None
    assert post.author.posts == [post]  # no refresh: relationships stay readable, no IO
    assert post.author.email.endswith("@example.com")  # by the default factory for User
    assert await db_session.get(User, post.author_id) is post.author
    assert await observe("posts") == 0


@pytest.mark.asyncio
async def test_polyfactory_collections_start_empty_and_batches_flush(db_factories, db_session):
    user = await PolyUserFactory.create_async()
    posts = await PolyPostFactory.create_batch_async(3, author=user)

    assert PolyUserFactory.build().posts == []  # not one random post, as polyfactory 3 makes
    assert user.posts == posts and {p.author_id for p in posts} == {user.id}
    assert await db_session.scalar(_count(User)) == 1
    assert await db_session.scalar(_count(Post)) == 3


@pytest.mark.asyncio
async def test_a_declared_collection_is_generated(db_factories):
    class WriterFactory(AsyncSQLAlchemyPolyfactory[User]):
        posts = Use(lambda: [Post(title="first"), Post(title="second")])

    writer = await WriterFactory.create_async()

    titles = [(p.title, p.author_id) for p in writer.posts]
    assert titles == [("first", writer.id), ("second", writer.id)]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"__async_session__": object()}, "__async_session__"),
        (
            {"__persistence_method__": SQLAlchemyPersistenceMethod.COMMIT},
            "__persistence_method__ = COMMIT",
        ),
    ],
)
@pytest.mark.asyncio
async def test_polyfactory_persistence_of_its_own_is_refused(
    db_factories, db_session, setting, expected
):
    base = (AsyncSQLAlchemyPolyfactory[User],)
    committing = types.new_class("CommittingFactory", base, {}, lambda ns: ns.update(setting))

    with pytest.raises(FactorySessionError, match=rf"CommittingFactory sets {expected}, but "):
        await committing.create_async()
    assert await db_session.scalar(_count(User)) == 0


# -- seeds ------------------------------------------------------------------------------------

def test_the_seed_is_a_stable_hash_of_the_node_id():
    assert seed_for("tests/test_x.py::test_a") == seed_for("tests/test_x.py::test_a")
    assert seed_for("tests/test_x.py::test_a") != seed_for("tests/test_x.py::test_b")
    assert seed_for("") == 0xE3B0C442  # the first 4 bytes of sha256(b""): no per-process salt


def test_seeding_makes_the_same_data_and_restarts_sequences():
    def sample() -> list[object]:
        return [UserFactory.build().email, UserFactory.build().name, PolyUserFactory.build().email]

    seed_factories(1)
    first = sample()
    seed_factories(1)
    assert sample() == first
    assert first[0] == "user0@example.com"
    seed_factories(2)
    assert sample()[1:] != first[1:]


def test_random_state_continues_where_it_was():
    seed_factories(3)
    state = random_state()
    expected = [UserFactory.build().name, PolyUserFactory.build().name]
    seed_factories(4)  # what pytest-randomly does before a test body
    set_random_state(state)
    assert [UserFactory.build().name, PolyUserFactory.build().name] == expected


@pytest.mark.asyncio
async def test_db_factories_seeds_from_the_test_node_id(db_factories, request):
    names = [UserFactory.build().name for _ in range(3)]

    seed_factories(seed_for(request.node.nodeid))
    assert [UserFactory.build().name for _ in range(3)] == names


@pytest.mark.asyncio(loop_scope="session")
async def test_db_factories_on_a_session_loop(db_factories, db_session):
    post = await PostFactory.create()
    assert await db_session.scalar(_count(Post)) == 1 and post.author.id is not None


# -- in a user's project ------------------------------------------------------------------------

PROJECT = """
    import json, pathlib
    import factory, pytest
    from sqlalchemy import func, select
    from recipes.databases import make_engine
    from recipes.janitor import run_coroutine
    from recipes.demo.models import Base, Post, User
    from recipes.factories import AsyncSQLAlchemyFactory, AsyncSQLAlchemyPolyfactory

    class UserFactory(AsyncSQLAlchemyFactory):
        class Meta:
            model = User
        email = factory.Sequence(lambda n: f"user{n}@example.com")
        name = factory.Faker("first_name")

    class PostFactory(AsyncSQLAlchemyFactory):
        class Meta:
            model = Post
        author = factory.SubFactory(UserFactory)
        title = factory.Faker("sentence")

    class PolyPostFactory(AsyncSQLAlchemyPolyfactory[Post]):
        pass

    @pytest.fixture(autouse=True)
    def census(db_url):
        # after the test's transaction: rows left in the database, through a fresh engine
        yield
        async def count():
            engine = make_engine(db_url)
            async with engine.connect() as connection:
                rows = {m.__tablename__: await connection.scalar(select(func.count()).select_from(m))
                        for m in (User, Post)}
            await engine.dispose()
            return rows
        path = pathlib.Path("census.json")
        previous = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(previous + [run_coroutine(count)]))
"""

TESTS_ON_BOTH_LOOPS = """
    import pytest
    from conftest_factories import PolyPostFactory, PostFactory, UserFactory

    pytestmark = pytest.mark.usefixtures("db_factories")

    @pytest.mark.asyncio
    async def test_on_the_function_loop():
        user = await UserFactory.create()
        assert user.id is not None

    @pytest.mark.asyncio(loop_scope="session")
    async def test_on_the_session_loop():
        user = await UserFactory.create()
        post = await PostFactory.create(author=user)
        assert post.author_id == user.id

    @pytest.mark.asyncio(loop_scope="session")
    async def test_polyfactory_on_the_session_loop():
        posts = await PolyPostFactory.create_batch_async(2)
        assert all(post.author_id == post.author.id for post in posts)
"""


def _project(pytester: pytest.Pytester, tests: str) -> None:
    pytester.makepyfile(conftest_factories=textwrap.dedent(PROJECT), test_project=textwrap.dedent(tests))
    pytester.makeconftest('pytest_plugins = ["recipes.plugin", "conftest_factories"]\n')


def _pg(url) -> str:
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_line_per_row_on_any_loop_and_nothing_left_after_each_test(
    backend, run_pytest, pytester, request
):
    if backend == "sqlite":
        url = "sqlite+aiosqlite://"
    else:
        url = _pg(request.getfixturevalue("pg_server_url"))
    _project(pytester, TESTS_ON_BOTH_LOOPS)

    result = run_pytest("--db-url", url, "-v")

    result.assert_outcomes(passed=3)
    census = json.loads((pytester.path / "census.json").read_text())
    assert census == [{"users": 0, "posts": 0}] * 3


FAILS_WITH_ITS_DATA = """
    import pytest
    import pytest_asyncio
    from conftest_factories import UserFactory

    @pytest_asyncio.fixture
    async def user(db_factories):
        return await UserFactory.create()

    @pytest.mark.asyncio
    async def test_fails_with_its_data(user):
        other = await UserFactory.create()
        assert False, f"data: {user.name} {other.name} {other.email}"
"""


def _seed_and_data(result: pytest.RunResult) -> tuple[int, str]:
    text = result.stdout.str()
    seed = re.search(r"seed (\d+), from the test's node id: every run of this test makes the same data", text)
    data = re.search(r"AssertionError: data: (.*)", text)
    assert seed and data, text
    return int(seed.group(1)), data.group(1)


def test_the_seed_is_in_the_failure_report_and_the_same_on_a_rerun(run_pytest, pytester):
    _project(pytester, FAILS_WITH_ITS_DATA)

    first, again = run_pytest(), run_pytest()

    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(
        ["*- recipes factories -*", "seed *(outside pytest: recipes.factories.seed_factories(*))"]
    )
    assert _seed_and_data(first) == _seed_and_data(again)
    assert _seed_and_data(first)[0] == seed_for("test_project.py::test_fails_with_its_data")


ASKS_AT_RUN_TIME = """
    import pytest
    from conftest_factories import UserFactory

    @pytest.fixture
    def late(request):  # db_factories, though not among any test's fixtures
        return request.getfixturevalue("db_factories")

    @pytest.mark.asyncio
    async def test_fails_with_its_data(late):
        user = await UserFactory.create()
        assert False, f"data: {user.name}"

    def test_without_factories(request, db_session):
        names = [name for name, _ in request.config.pluginmanager.list_name_plugin()]
        assert ("recipes-factories" in names) == request.config.getoption("--asked")
"""


@pytest.mark.parametrize("asked", [True, False], ids=["getfixturevalue", "no test asks"])
def test_the_factory_hooks_run_only_where_a_test_asks_for_db_factories(run_pytest, pytester, asked):
    """They are registered once a test names db_factories (at collection) or gets it (at run
    time): a run without it runs none of them, and one that gets it late still reports the seed."""
    _project(pytester, ASKS_AT_RUN_TIME)
    pytester.makeconftest(
        (pytester.path / "conftest.py").read_text()
        + '\ndef pytest_addoption(parser):\n    parser.addoption("--asked", action="store_true")\n'
    )

    result = run_pytest("-p", "no:randomly", *(["--asked"] if asked else ["-k", "without"]))

    if asked:  # test 1 registers them, so test 2 finds them
        result.assert_outcomes(failed=1, passed=1)
        result.stdout.fnmatch_lines(["*- recipes factories -*", "seed *"])
    else:
        result.assert_outcomes(passed=1, deselected=1)


def test_pytest_randomly_does_not_change_a_tests_data(pytester, monkeypatch):
    """pytest-randomly reseeds factory_boy, Faker and polyfactory before each test body, with a
    seed of its own; the test's data must still follow the test's seed."""
    pytest.importorskip("pytest_randomly")
    monkeypatch.delenv("RECIPES_DB_URL", raising=False)
    _project(pytester, FAILS_WITH_ITS_DATA)
    pytester.makeini("[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
                     "recipes_metadata = recipes.demo.models:Base\n")
    runs = [pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--randomly-seed={n}")
            for n in (1, 2)]
    runs[0].stdout.fnmatch_lines(["Using --randomly-seed=1"])

    assert _seed_and_data(runs[0]) == _seed_and_data(runs[1])


def test_without_the_extra_the_plugin_imports_and_db_factories_says_what_to_install(
    run_pytest, pytester
):
    blocked = "import sys; sys.modules['factory'] = None; sys.modules['polyfactory'] = None; "
    imported = subprocess.run(
        [sys.executable, "-c", blocked + "import recipes.plugin"], capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr

    pytester.makeconftest(blocked.replace("; ", "\n") + 'pytest_plugins = ["recipes.plugin"]\n')
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_uses_factories(db_factories):
            pass

        @pytest.mark.asyncio
        async def test_without_factories(db_session):
            pass
        """
    )
    result = run_pytest()

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*recipes: db_factories needs factory_boy and polyfactory, which do not import here "
        "(import of factory halted; None in sys.modules): "
        'pip install "testing-async-sqlalchemy[[]factories[]]"'
    ])
    assert "During handling" not in result.stdout.str()
