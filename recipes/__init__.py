"""Testing Async SQLAlchemy: fixtures and helpers for testing async SQLAlchemy code with pytest.

Each module is one recipe, short enough to read in one sitting and to copy into a
``conftest.py``:

- :mod:`recipes.databases`: which database a test run uses, and a throwaway one beside it.
- :mod:`recipes.janitor`: creating and dropping throwaway databases on a PostgreSQL server.
- :mod:`recipes.sqlite`: the fixes every SQLite engine needs before it can roll back.
- :mod:`recipes.transactions`: the per-test transaction that rolls back whatever the code commits.
- :mod:`recipes.mocks`: a mock AsyncSession whose query results behave like real ones.
- :mod:`recipes.factories`: factory_boy and polyfactory factories that flush into the test's session.
- :mod:`recipes.constraints`: assert which constraint a block violates, in a savepoint so the test goes on.
- :mod:`recipes.migrations`: Alembic migration tests, async, on the test database (one head,
  stairway, drift, data migrations).
- :mod:`recipes.queries`: the statements a block sends, a limit on them, and lazy loads that fail loudly.
- :mod:`recipes.http`: a FastAPI app over HTTP in the test's transaction, its lifespan run,
  overrides checked and restored.
- :mod:`recipes.schema`: the test schema from one or several declarative bases, with schemas.
- :mod:`recipes.sessionmakers`: sessionmakers the application holds, replaced by the test's.

:mod:`recipes.plugin` wires them into pytest; installing the package loads it
(:mod:`recipes.autoload`), or ``pytest_plugins = ["recipes.plugin"]``.
:mod:`recipes.rendering` and :mod:`recipes.runner` execute and check the chapters.
:mod:`recipes.demo` is the small application the chapters and tests exercise; it imports no recipe.
"""

__version__ = "0.1.0"
