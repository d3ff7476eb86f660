"""Test data factories for an AsyncSession: factory_boy and polyfactory, flushed, never committed.

factory_boy has no async support, and polyfactory's async persistence commits and refreshes.
This recipe keeps the declarations of both libraries and replaces only how rows are saved, in
one place for every factory:

- :class:`AsyncSQLAlchemyFactory` (factory_boy): ``await Factory.create(...)`` and
  ``await Factory.create_batch(n, ...)`` run factory_boy's create strategy inside
  ``AsyncSession.run_sync``, so SubFactory parents, RelatedFactory children and post-generation
  hooks (called with ``create=True``) are added to the session, then flush once: primary keys,
  foreign keys and database defaults are set, parents are inserted before children.
- :class:`AsyncSQLAlchemyPolyfactory` (polyfactory): ``create_async`` and
  ``create_batch_async`` add the built rows and flush. The database numbers the rows (no
  random primary keys), a parent comes from a relationship (no random foreign keys), and
  collections (``User.posts``) are left empty unless the factory declares them.
- :func:`bind_session`: the session every factory uses inside the block. The plugin's
  ``db_factories`` fixture binds ``db_session`` for one test, so the rows roll back with it.
- :func:`seed_for` and :func:`seed_factories`: one seed per test, from its node id, for
  factory_boy's fuzzy values, Faker and polyfactory; factory_boy's sequences restart at 0.

What a caller may rely on: a factory never commits and never closes the session; after
``create`` a new row's collections read as empty without IO (an AsyncSession cannot lazy-load
them: MissingGreenlet). ``build()`` and ``batch()`` need no session, as before.

Pitfalls:

- factory_boy's own ``sqlalchemy_session_persistence = "flush"`` on an AsyncSession calls
  ``flush()`` without awaiting it: a coroutine that never runs, and ``id`` stays None.
  ``"commit"`` is refused here: inside the test's transaction it would only release a savepoint.
- A SubFactory or RelatedFactory must point at an :class:`AsyncSQLAlchemyFactory` too; a plain
  ``SQLAlchemyModelFactory`` there looks for a session of its own.
- polyfactory 2.x defaulted to ``__set_relationships__ = False``: a random ``author_id`` that
  names no row, refused by PostgreSQL and accepted by SQLite without ``PRAGMA foreign_keys``.
- polyfactory fills every column it may, defaults included (``is_admin`` comes out random),
  and knows a column's length, not that it is unique (an email may be empty, or repeat):
  declare or pass what a test relies on.
- :class:`AsyncSQLAlchemyPolyfactory` is a polyfactory base factory: polyfactory makes the
  parents (a post's author) of every SQLAlchemy factory with the base factory defined last,
  this one unless another follows, and with a model's own factory where that factory sets
  ``__set_as_default_factory_for_type__ = True``.
- Its own ``__async_session__`` persistence refreshes each row, which expires relationships:
  ``post.author`` then needs IO (MissingGreenlet). Setting it on these factories is refused.
- Children that a factory_boy post-generation hook builds itself must be added by the hook:
  ``bound_session(PostFactory).add(PostFactory.build(author=self))``. SQLAlchemy 2 does not
  cascade a child into the session through its backref (SAWarning "not in session").
  RelatedFactory and RelatedFactoryList add theirs.
- pytest-randomly reseeds the same generators before every test body, with a seed of its own;
  the plugin puts them back where the test's fixtures left them (:func:`random_state`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import factory
import factory.random
import faker.generator
from factory.alchemy import SQLAlchemyModelFactory
from polyfactory.factories.base import BaseFactory
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory, SQLAlchemyPersistenceMethod
from polyfactory.field_meta import FieldMeta
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

__all__ = [
    "AsyncSQLAlchemyFactory",
    "AsyncSQLAlchemyPolyfactory",
    "FactorySessionError",
    "bind_session",
    "bound_session",
    "random_state",
    "seed_factories",
    "seed_for",
    "set_random_state",
]

T = TypeVar("T")


class FactorySessionError(RuntimeError):
    """A factory cannot create rows as set up: no session is bound, it names its own, or it commits."""


# --8<-- [start:bind_session]
_bound: list[AsyncSession] = []  # a stack: bind_session() nests


@contextmanager
def bind_session(session: AsyncSession) -> Iterator[AsyncSession]:
    """Inside the block every factory creates its rows in ``session``; then the binding before."""
    _bound.append(session)
    try:
        yield session
    finally:
        _bound.pop()


def bound_session(factory_class: type) -> AsyncSession:
    """The session bound for the test, or one error that says how to bind one."""
    if not _bound:
        raise FactorySessionError(
            f"{factory_class.__name__} has no session to create rows in: request the "
            "db_factories fixture in the test (or in a fixture it uses), or bind one with "
            "recipes.factories.bind_session(session)"
        )
    return _bound[-1]


def _flush(session: Session) -> None:
    """Flush, the new rows' collections loaded empty first: a new row has no children yet, and
    reading ``user.posts`` after the flush would otherwise be a lazy load (MissingGreenlet)."""
    for obj in session.new:
        state = inspect(obj)
        for relationship in state.mapper.relationships:
            if relationship.uselist and relationship.key in state.unloaded:
                if relationship.lazy not in ("dynamic", "write_only"):
                    set_committed_value(obj, relationship.key, ())
    session.flush()


def _refuse_own_persistence(factory_class: Any) -> None:
    """One error for a factory set up to save by itself: with a session of its own, or a commit."""
    if issubclass(factory_class, SQLAlchemyFactory):  # polyfactory
        own_session = factory_class.__async_session__ is not None
        commits = factory_class.__persistence_method__ is SQLAlchemyPersistenceMethod.COMMIT
        settings = "__async_session__", "__persistence_method__ = COMMIT"
    else:  # factory_boy
        meta = factory_class._meta
        own_session = meta.sqlalchemy_session is not None or meta.sqlalchemy_session_factory is not None
        commits = meta.sqlalchemy_session_persistence == "commit"
        settings = "Meta.sqlalchemy_session", 'Meta.sqlalchemy_session_persistence = "commit"'
    if own_session:
        raise FactorySessionError(
            f"{factory_class.__name__} sets {settings[0]}, but its rows go into the session "
            "bound for the test (the db_factories fixture, or bind_session()): remove it"
        )
    if commits:
        raise FactorySessionError(
            f"{factory_class.__name__} sets {settings[1]}, but a factory never commits the "
            "test's session: inside the test's transaction a commit only releases a savepoint, "
            "and the rows still roll back when the test ends. Remove it: the factory flushes, "
            "which sets primary keys and defaults."
        )
# --8<-- [end:bind_session]


# --8<-- [start:factory_boy]
class AsyncSQLAlchemyFactory(SQLAlchemyModelFactory):
    """A factory_boy factory for an AsyncSession: ``await create()``, ``await create_batch()``."""

    class Meta:
        abstract = True

    @classmethod
    async def create(cls, **kwargs: Any) -> Any:
        return (await cls.create_batch(1, **kwargs))[0]

    @classmethod
    async def create_batch(cls, size: int, **kwargs: Any) -> list[Any]:
        # factory_boy's sync code where sync IO works: in the greenlet of run_sync
        return await bound_session(cls).run_sync(_create_and_flush, cls, size, kwargs)

    @classmethod
    def _create(cls, model_class: type, *args: Any, **kwargs: Any) -> Any:
        # every factory of the tree (SubFactory, RelatedFactory) saves through here
        _refuse_own_persistence(cls)
        session = bound_session(cls).sync_session
        if cls._meta.sqlalchemy_get_or_create:
            return cls._get_or_create(model_class, session, args, kwargs)
        return cls._save(model_class, session, args, kwargs)


def _create_and_flush(
    session: Session, factory_class: type, size: int, kwargs: dict[str, Any]
) -> list[Any]:
    """factory_boy's create strategy ``size`` times (each object added, none flushed), one flush."""
    create = super(AsyncSQLAlchemyFactory, factory_class).create  # the sync one
    objects = [create(**kwargs) for _ in range(size)]
    _flush(session)
    return objects


# --8<-- [end:factory_boy]


# --8<-- [start:polyfactory]
class AsyncSQLAlchemyPolyfactory(SQLAlchemyFactory[T]):
    """A polyfactory factory for an AsyncSession: ``create_async`` and ``create_batch_async``
    add the rows to the bound session and flush; nothing commits, nothing is refreshed."""

    __is_base_factory__ = True
    __set_primary_key__ = False  # the database numbers the rows
    __set_foreign_keys__ = False  # a random author_id names no row ...
    __set_relationships__ = True  # ... the author comes from the relationship instead
    __persistence_method__ = SQLAlchemyPersistenceMethod.FLUSH

    @classmethod
    def get_model_fields(cls) -> list[FieldMeta]:
        # a new row has no children: collections (User.posts) only where the factory declares them
        collections = {r.key for r in inspect(cls.__model__).relationships if r.uselist}
        fields = super().get_model_fields()
        return [f for f in fields if f.name not in collections or hasattr(cls, f.name)]

    @classmethod
    def _get_async_persistence(cls) -> _FlushPersistence:
        _refuse_own_persistence(cls)
        return _FlushPersistence(bound_session(cls))


class _FlushPersistence:
    """polyfactory's AsyncPersistenceProtocol: add, flush; no commit, no refresh."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def save(self, data: Any) -> Any:
        return (await self.save_many([data]))[0]

    async def save_many(self, data: list[Any]) -> list[Any]:
        self.session.add_all(data)
        await self.session.run_sync(_flush)
        return data
# --8<-- [end:polyfactory]


# --8<-- [start:seed]
def seed_for(nodeid: str) -> int:
    """The seed of one test: a hash of its node id, the same on every run and every machine."""
    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest()[:4], "big")


def seed_factories(seed: int) -> None:
    """Seed the generators factory_boy, Faker and polyfactory draw from, and restart factory_boy's
    sequences at 0: the rows a test makes then depend on ``seed`` alone, not on earlier tests."""
    factory.random.reseed_random(seed)  # factory_boy's generator and Faker's shared one
    BaseFactory.__random__.seed(seed)  # polyfactory's; its Faker uses Faker's shared generator
    classes = [factory.Factory]
    while classes:
        factory_class = classes.pop()
        classes.extend(factory_class.__subclasses__())
        meta = factory_class._meta
        if not meta.abstract and meta.counter_reference is meta:  # else it counts with its parent
            factory_class.reset_sequence()


def random_state() -> list[Any]:
    """Where the generators :func:`seed_factories` seeds are now, to continue there later."""
    return [gen.getstate() for gen in _generators()]


def set_random_state(state: list[Any]) -> None:
    """Put the generators back where :func:`random_state` found them (pytest-randomly reseeds
    the same three before every test body)."""
    for gen, saved in zip(_generators(), state, strict=True):
        gen.setstate(saved)


def _generators() -> list[Any]:
    return [factory.random.randgen, faker.generator.random, BaseFactory.__random__]
# --8<-- [end:seed]
