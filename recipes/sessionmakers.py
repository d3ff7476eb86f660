"""Sessionmakers the application holds, replaced by the test's: ini ``recipes_sessionmakers``.

Application code that opens its sessions from a module-level ``async_sessionmaker`` (a
background job's ``SessionLocal``, a service that never sees a request) bypasses FastAPI's
``dependency_overrides`` and would reach the database the application names. With::

    recipes_sessionmakers = app.db:SessionLocal, app.jobs:make_session

the plugin replaces each named attribute with the test's ``db_sessionmaker`` for the length
of every test that uses the database, and puts the original back afterwards. A test that asks
for no database fixture gets a stand-in that refuses, in one line, to open a session.

Pitfalls:

- The attribute is replaced where it is defined. ``from app.db import SessionLocal`` in
  another module copies the reference at import time: name that module's attribute too
  (``app.jobs:SessionLocal``), or have the code read ``app.db.SessionLocal`` when it runs.
- An *engine* the application holds cannot be joined to the test's transaction by
  patching: sessions made from it commit for real. Have the application make its sessions
  from a sessionmaker (listed here) or take the engine as a dependency.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

__all__: list[str] = []  # hooks, for recipes.plugin

_DATABASE_FIXTURES = ("db_engine",)  # every fixture that reaches the test database needs it


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_sessionmakers(parser: pytest.Parser) -> None:
    parser.addini(
        "recipes_sessionmakers",
        'sessionmakers the application holds, "app.db:SessionLocal, app.jobs:Session": '
        "replaced by the test's db_sessionmaker during each test",
        default="",
    )


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_sessionmakers(config: pytest.Config) -> None:
    targets = []
    for spec in (part.strip() for part in config.getini("recipes_sessionmakers").split(",")):
        if not spec:
            continue
        module_name, _, path = spec.partition(":")
        owner_path, _, attribute = path.rpartition(".")
        try:
            owner: Any = importlib.import_module(module_name)
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            current = getattr(owner, attribute)
        except Exception as exc:
            raise pytest.UsageError(
                f"recipes: recipes_sessionmakers names {spec!r}, which does not import "
                f'({type(exc).__name__}: {exc}); write "package.module:SessionLocal"'
            ) from None
        if not callable(current):
            raise pytest.UsageError(
                f"recipes: recipes_sessionmakers names {spec!r}, which is {type(current).__name__}, "
                "not a sessionmaker"
            )
        targets.append((owner, attribute, spec))
    if targets:
        config.pluginmanager.register(_Replacer(targets), "recipes-sessionmakers")


class _NoDatabase:
    """Stands in for an application's sessionmaker during a test that has no database."""

    def __init__(self, spec: str, test: str) -> None:
        self._message = (
            f"{test} opened a session from {spec} (recipes_sessionmakers), but asks for no "
            "database fixture: add db_session or db_sessionmaker to the test, so that the "
            "session is the test's, rolled back at its end"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(self._message)

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(self._message)


class _Replacer:
    """Registered only where the ini names sessionmakers: a project without any runs no fixture
    of this module in its tests (an autouse fixture in every test would cost each of them
    pytest's fixture machinery, and the plugin stays inert until asked for a database)."""

    def __init__(self, targets: list[tuple[Any, str, str]]) -> None:
        self.targets = targets

    @pytest.fixture(autouse=True)
    def _recipes_sessionmakers(self, request: pytest.FixtureRequest) -> Iterator[None]:
        targets = self.targets
        if any(name in request.fixturenames for name in _DATABASE_FIXTURES):
            replacement: Any = request.getfixturevalue("db_sessionmaker")
            replacements = [replacement] * len(targets)
        else:
            replacements = [_NoDatabase(spec, request.node.nodeid) for _, _, spec in targets]
        originals = [getattr(owner, attribute) for owner, attribute, _ in targets]
        for (owner, attribute, _), value in zip(targets, replacements):
            setattr(owner, attribute, value)
        try:
            yield
        finally:
            for (owner, attribute, _), value in zip(targets, originals):
                setattr(owner, attribute, value)
