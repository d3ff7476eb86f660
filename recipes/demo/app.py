"""The demo application over HTTP: a FastAPI app on the demo's models and services.

Written the way a FastAPI project writes it, and knowing nothing about tests:

- :func:`create_app` builds the app from :class:`Settings`; the module's ``app`` is
  ``create_app()``, configured from the environment. The lifespan opens the engine and the
  sessionmaker at startup, with the in-memory credential store and mail outbox of
  :mod:`recipes.demo.signup`, and disposes of the engine at shutdown.
- :func:`get_session` is the dependency every route gets its session from
  (``SessionDep``); :func:`get_current_user` reads the bearer token that :func:`issue_token`
  signs with the app's secret key (``CurrentUser``).

The routes: ``POST /users`` signs up (201; 409 when the email is taken), ``POST /tokens`` logs
in (200; 401), ``GET /users/me``, ``GET /users/{user_id}``, ``POST /posts``,
``GET /posts/{post_id}`` and ``POST /posts/{post_id}/likes``; an unknown id is a 404, a
request that breaks the schemas a 422.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from .models import EMAIL_MAX_LENGTH, TITLE_MAX_LENGTH, Post, User
from .service import EmailTaken, InvalidPost, like_post, publish_post
from .signup import MemoryCredentialStore, MemoryEmailSender, PasswordHasher, SignupService

__all__ = [
    "CurrentUser",
    "SessionDep",
    "Settings",
    "app",
    "create_app",
    "get_current_user",
    "get_session",
    "issue_token",
    "router",
]


@dataclass(frozen=True)
class Settings:
    """What the app is configured with; :meth:`from_env` reads ``DEMO_*`` variables."""

    database_url: str = "sqlite+aiosqlite:///demo.db"
    secret_key: str = "change-me"
    password_iterations: int = 600_000

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DEMO_DATABASE_URL", cls.database_url),
            secret_key=os.environ.get("DEMO_SECRET_KEY", cls.secret_key),
            password_iterations=int(os.environ.get("DEMO_PASSWORD_ITERATIONS", cls.password_iterations)),
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Startup: the engine, the sessionmaker and the signup collaborators. Shutdown: dispose."""
    settings: Settings = app.state.settings
    engine = create_async_engine(settings.database_url)
    app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    app.state.credentials = MemoryCredentialStore()
    app.state.emails = MemoryEmailSender()
    app.state.hasher = PasswordHasher(settings.password_iterations)
    try:
        yield
    finally:
        await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for one request, closed after the response."""
    async with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


bearer = HTTPBearer(auto_error=False)  # 401 of our own, with WWW-Authenticate


def _signature(secret_key: str, user_id: str) -> str:
    return hmac.new(secret_key.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def issue_token(secret_key: str, user_id: int) -> str:
    """A bearer token for the user: the id and its HMAC signature (no expiry: a demo)."""
    return f"{user_id}.{_signature(secret_key, str(user_id))}"


async def get_current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The user the bearer token names; 401 without a valid token."""
    user_id, _, signature = credentials.credentials.partition(".") if credentials else ("", "", "")
    secret_key = request.app.state.settings.secret_key
    valid = user_id.isdigit() and hmac.compare_digest(signature, _signature(secret_key, user_id))
    user = await session.get(User, int(user_id)) if valid else None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


class SignupIn(BaseModel):
    email: str = Field(max_length=EMAIL_MAX_LENGTH, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    password: str = Field(min_length=8)
    name: str = Field(default="", max_length=80)


class LoginIn(BaseModel):
    email: str
    password: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str


class PostIn(BaseModel):
    title: str = Field(min_length=1, max_length=TITLE_MAX_LENGTH)
    body: str = ""


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    author_id: int
    title: str
    body: str
    likes: int


class LikesOut(BaseModel):
    likes: int


router = APIRouter()


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def sign_up(data: SignupIn, request: Request, session: SessionDep) -> UserOut:
    state = request.app.state
    service = SignupService(session, state.credentials, state.emails, state.hasher)
    try:
        user = await service.sign_up(data.email, data.password, data.name)
    except EmailTaken as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return UserOut.model_validate(user)


@router.post("/tokens")
async def log_in(data: LoginIn, request: Request, session: SessionDep) -> TokenOut:
    state = request.app.state
    user = await session.scalar(select(User).where(User.email == data.email))
    stored = state.credentials.hashes.get(user.id) if user else None
    if stored is None or not state.hasher.verify(data.password, stored):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
    return TokenOut(access_token=issue_token(state.settings.secret_key, user.id))


@router.get("/users/me")  # before /users/{user_id}, which would take "me" for an id
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/users/{user_id}")
async def read_user(user_id: int, session: SessionDep) -> UserOut:
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    return UserOut.model_validate(user)


@router.post("/posts", status_code=status.HTTP_201_CREATED)
async def create_post(data: PostIn, user: CurrentUser, session: SessionDep) -> PostOut:
    try:
        post = await publish_post(session, user.id, data.title, data.body)
    except InvalidPost as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return PostOut.model_validate(post)


@router.get("/posts/{post_id}")
async def read_post(post_id: int, session: SessionDep) -> PostOut:
    post = await session.get(Post, post_id)
    if post is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "post not found")
    return PostOut.model_validate(post)


@router.post("/posts/{post_id}/likes")
async def like(post_id: int, user: CurrentUser, session: SessionDep) -> LikesOut:
    try:
        likes = await like_post(session, post_id)
    except NoResultFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "post not found") from None
    return LikesOut(likes=likes)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, configured with ``settings`` (default: :meth:`Settings.from_env`)."""
    app = FastAPI(title="Demo", lifespan=lifespan)
    app.state.settings = settings or Settings.from_env()
    app.include_router(router)
    return app


app = create_app()
