"""recipes.http on every configured database: the demo app over HTTP, in the test's transaction.

Each test's app is the demo app configured with a SQLite file of its own as "the app's own
database" (``own_db``); nothing but a mistake opens it, so the file's absence after a test
says that every request went through the test's sessions. Isolation from the outside is read
through ``observe``, a separate engine.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import factory
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from recipes.demo import app as demo
from recipes.demo.models import Base, Post, User
from recipes.demo.service import count_users
from recipes.factories import AsyncSQLAlchemyFactory
from recipes.http import DependencyNotFound, http_client, require_dependency
from recipes.transactions import LoopMismatchError

try:
    import httpx2 as httpx
except ModuleNotFoundError:  # the recipe works with either
    import httpx

PASSWORD = "correct horse"


class UserFactory(AsyncSQLAlchemyFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("first_name")


class PostFactory(AsyncSQLAlchemyFactory):
    class Meta:
        model = Post

    author = factory.SubFactory(UserFactory)
    title = factory.Faker("sentence", nb_words=4)


@pytest.fixture
def own_db(tmp_path: Path) -> Path:
    return tmp_path / "own.db"


@pytest.fixture
def app(own_db: Path) -> FastAPI:
    settings = demo.Settings(database_url=f"sqlite+aiosqlite:///{own_db}", password_iterations=1_000)
    return demo.create_app(settings)


@pytest_asyncio.fixture
async def client(app, db_sessionmaker):
    async with http_client(app, db_sessionmaker, dependency=demo.get_session) as client:
        yield client


@pytest_asyncio.fixture
async def author(db_factories) -> User:
    return await UserFactory.create()


@pytest_asyncio.fixture
async def author_client(app, client, author):
    """The client, authenticated as ``author``, a user from the factory."""
    token = demo.issue_token(app.state.settings.secret_key, author.id)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


async def sign_up(client, email: str = "ada@example.com") -> httpx.Response:
    return await client.post("/users", json={"email": email, "password": PASSWORD})


# -- the requests run in the test's transaction -----------------------------------------------


@pytest.mark.asyncio
async def test_requests_commit_into_the_tests_transaction(client, db_session, observe, own_db):
    response = await sign_up(client)

    assert response.status_code == 201, response.text
    assert await count_users(db_session) == 1  # the test sees what the request committed
    assert await observe("users") == 0  # nobody outside the test's transaction does
    assert not own_db.exists()  # and the app's own database was never opened


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.asyncio
async def test_each_test_starts_from_an_empty_database(client, run):
    assert (await sign_up(client)).status_code == 201  # the same email, both runs


@pytest.mark.asyncio
async def test_a_flow_across_requests(app, client, db_session):
    assert (await sign_up(client)).status_code == 201
    assert (await sign_up(client)).status_code == 409  # the first one's commit is visible
    login = await client.post("/tokens", json={"email": "ada@example.com", "password": PASSWORD})
    client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    post = (await client.post("/posts", json={"title": "Hello"})).json()
    for expected in (1, 2):
        likes = await client.post(f"/posts/{post['id']}/likes")
        assert likes.json() == {"likes": expected}

    assert (await client.get(f"/posts/{post['id']}")).json()["likes"] == 2
    assert (await client.get("/users/me")).json()["email"] == "ada@example.com"
    assert await db_session.scalar(select(Post.likes)) == 2
    [(to, subject, _)] = app.state.emails.outbox  # the lifespan's outbox
    assert (to, subject) == ("ada@example.com", "Confirm your email")


@pytest.mark.asyncio
async def test_the_authenticated_client_is_the_factorys_user(author_client, author):
    response = await author_client.get("/users/me")

    assert response.status_code == 200
    assert response.json() == {"id": author.id, "email": author.email, "name": author.name}


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/users/999999", None, 404),
        ("GET", "/posts/999999", None, 404),
        ("POST", "/posts/999999/likes", None, 404),
        ("GET", "/users/ada", None, 422),
        ("POST", "/posts", {"title": ""}, 422),
        ("POST", "/posts", {"title": "x" * 121}, 422),
        ("POST", "/users", {"email": "not an email", "password": PASSWORD}, 422),
    ],
)
@pytest.mark.asyncio
async def test_not_found_and_invalid(author_client, method, path, body, status):
    response = await author_client.request(method, path, json=body)

    assert response.status_code == status, response.text


@pytest.mark.asyncio
async def test_without_a_token_the_app_answers_401(client):
    response = await client.get("/users/me")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.asyncio
async def test_db_session_holds_what_it_loaded_until_refreshed(author_client, author, db_session):
    post = await PostFactory.create(author=author)
    await author_client.post(f"/posts/{post.id}/likes")

    assert (await db_session.get(Post, post.id)).likes == 0  # its identity map, not the row
    await db_session.refresh(post)
    assert post.likes == 1


# -- overrides: restored, and keyed on a dependency the app has ---------------------------------


@pytest.mark.asyncio
async def test_overrides_are_restored_after_the_block(app, db_sessionmaker):
    def anyone() -> User:
        return User(id=0, email="test@example.com", name="test")

    app.dependency_overrides[demo.get_current_user] = anyone
    before = dict(app.dependency_overrides)
    async with http_client(app, db_sessionmaker, dependency=demo.get_session):
        assert app.dependency_overrides[demo.get_current_user] is anyone
        app.dependency_overrides[demo.bearer] = lambda: None  # set by the test inside the block

    assert app.dependency_overrides == before


@pytest.mark.asyncio
async def test_overrides_are_restored_when_the_block_raises(app, db_sessionmaker):
    with pytest.raises(ZeroDivisionError):
        async with http_client(app, db_sessionmaker, dependency=demo.get_session) as client:
            await sign_up(client)
            raise ZeroDivisionError

    assert app.dependency_overrides == {}


async def get_session() -> AsyncSession:  # the same name as the app's: another function
    raise AssertionError("never called")


@pytest.mark.parametrize(
    "wrong",
    [demo.SessionDep, AsyncSession, get_session, lambda: None],
    ids=["annotated-alias", "the-type", "same-name-elsewhere", "lambda"],
)
@pytest.mark.asyncio
async def test_a_key_no_route_depends_on_is_refused(app, db_sessionmaker, wrong):
    with pytest.raises(DependencyNotFound, match=r"depends on .*recipes\.demo\.app\.get_session"):
        async with http_client(app, db_sessionmaker, dependency=wrong):
            pytest.fail("the block must not run")

    assert app.dependency_overrides == {}
    assert not hasattr(app.state, "sessionmaker")  # the lifespan did not start either


@pytest.mark.asyncio
async def test_the_refusal_is_what_an_unchecked_override_hides(app, own_db, db_sessionmaker):
    """Keyed on SessionDep by hand, the override is ignored: the request commits for good."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{own_db}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    app.dependency_overrides[demo.SessionDep] = db_sessionmaker
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await sign_up(client)).status_code == 201
        async with engine.connect() as connection:
            assert await connection.scalar(select(User.email)) == "ada@example.com"
    finally:
        app.dependency_overrides.clear()
        await engine.dispose()


async def get_db():
    yield None


async def get_repository(db: Annotated[None, Depends(get_db)]):
    return db


def test_nested_dependencies_and_routes_on_the_app_are_found():
    app = FastAPI()

    @app.get("/")
    async def index(repository: Annotated[None, Depends(get_repository)]):
        return {}

    require_dependency(app, get_db)  # through get_repository
    with pytest.raises(DependencyNotFound, match=r"dependencies: .*get_db, .*get_repository$"):
        require_dependency(app, get_session)


# -- the lifespan ----------------------------------------------------------------------------


def lifespan_app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        events.append("startup")
        yield {"greeting": "hello"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request, session: Annotated[AsyncSession, Depends(demo.get_session)]):
        return {"greeting": getattr(request.state, "greeting", None), "users": await count_users(session)}

    return app


@pytest.mark.asyncio
async def test_the_lifespan_runs_around_the_block_and_its_state_reaches_requests(db_sessionmaker):
    events: list[str] = []
    app = lifespan_app(events)

    async with http_client(app, db_sessionmaker, dependency=demo.get_session) as client:
        assert events == ["startup"]
        assert (await client.get("/")).json() == {"greeting": "hello", "users": 0}
    assert events == ["startup", "shutdown"]


@pytest.mark.asyncio
async def test_shutdown_runs_when_the_block_raises(db_sessionmaker):
    events: list[str] = []
    with pytest.raises(ZeroDivisionError):
        async with http_client(lifespan_app(events), db_sessionmaker, dependency=demo.get_session):
            raise ZeroDivisionError

    assert events == ["startup", "shutdown"]


@pytest.mark.asyncio
async def test_lifespan_false_skips_it(db_sessionmaker):
    events: list[str] = []
    app = lifespan_app(events)

    async with http_client(app, db_sessionmaker, dependency=demo.get_session, lifespan=False) as client:
        assert (await client.get("/")).json() == {"greeting": None, "users": 0}
    assert events == []


# -- what the recipe replaces --------------------------------------------------------------


@pytest.mark.asyncio
async def test_starlette_testclient_cannot_use_the_tests_connection(app, db_sessionmaker):
    """TestClient runs the app on a loop of its own: the plugin's guard refuses, naming it."""
    from fastapi.testclient import TestClient

    async def test_session():
        async with db_sessionmaker() as session:
            yield session

    app.dependency_overrides[demo.get_session] = test_session
    try:
        with TestClient(app) as client, pytest.raises(LoopMismatchError, match="TestClient"):
            client.get("/users/1")
    finally:
        app.dependency_overrides.clear()
