"""The test schema from a project's models: one or several declarative bases, with schemas.

Real projects are not one ``Base``: an app has its models and a plugin has its own, a billing
module keeps its tables in a PostgreSQL schema of its own. This module turns what the ini's
``recipes_metadata`` names into tables in the test database:

- :func:`load_metadatas` reads ``"app.models:Base, billing.models:Base"`` (comma-separated;
  each a MetaData, a declarative base, or a list of them) and refuses, in one line naming
  both, two definitions of one table that differ: otherwise the first would silently win and
  tests would fail later on a missing column. The same table defined alike twice is created
  once.
- :func:`create_tables` creates each schema the tables name (``__table_args__ =
  {"schema": "billing"}``) before the tables, on PostgreSQL; and turns a table that cannot
  be created into one line naming the table and the database's reason, instead of a
  traceback repeated on every test.

Pitfalls:

- SQLite has no schemas (it has attached databases). A schema-qualified model on SQLite gets a
  line saying so: test such models on PostgreSQL.
- On MySQL and MariaDB a schema *is* a database: ``billing.invoices`` is the table
  ``invoices`` of the database ``billing``, beside the test database, not in it. Creating it
  would share it between runs (and with whatever ``billing`` already holds) and outlive the
  run, so a schema-qualified model on MySQL gets a line saying so, before anything is created.
- The tables are created on a connection of their own, committed, before any test's
  transaction begins: on MySQL, where DDL commits implicitly, that is the only safe place.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.schema import CreateSchema

from .databases import DatabaseConfigError, TestDatabase, make_engine
from .janitor import run_coroutine

__all__ = ["create_tables", "load_metadatas", "metadatas_of"]


def _import(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise DatabaseConfigError(f'recipes_metadata = {spec!r} names no object: write "package.module:Base"')
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:
        raise DatabaseConfigError(
            f"recipes_metadata = {spec!r} does not import ({type(exc).__name__}: {exc}); "
            'write it as "package.module:Base"'
        ) from None
    return target


def metadatas_of(value: Any, source: str) -> list[tuple[MetaData, str]]:
    """``value`` (a MetaData, a declarative base, or a list of them) as (MetaData, where from)."""
    items = value if isinstance(value, list | tuple) else [value]
    found = []
    for index, item in enumerate(items):
        metadata = item if isinstance(item, MetaData) else getattr(item, "metadata", None)
        if not isinstance(metadata, MetaData):
            raise DatabaseConfigError(
                f"{source} gave {item!r}: expected a MetaData, a declarative base or a list of them"
            )
        found.append((metadata, source if len(items) == 1 else f"{source}[{index}]"))
    return found


def load_metadatas(spec: str) -> list[tuple[MetaData, str]]:
    """The MetaData objects ``spec`` names, comma-separated, each with the name it was given."""
    found = [pair for part in spec.split(",") if part.strip()
             for pair in metadatas_of(_import(part.strip()), part.strip())]
    check_conflicts(found)
    return found


def _shape(table: Table) -> list[tuple[str, str]]:
    return [(column.name, repr(column.type)) for column in table.columns]


def check_conflicts(metadatas: Iterable[tuple[MetaData, str]]) -> None:
    """Refuse one table name defined with different columns by two of ``metadatas``."""
    seen: dict[str, tuple[Table, str]] = {}
    for metadata, source in metadatas:
        for key, table in metadata.tables.items():
            if key not in seen:
                seen[key] = (table, source)
                continue
            first, where = seen[key]
            if first is not table and _shape(first) != _shape(table):
                columns = [", ".join(name for name, _ in _shape(t)) for t in (first, table)]
                raise DatabaseConfigError(
                    f"table {key!r} is defined twice, differently: by {where} ({columns[0]}) "
                    f"and by {source} ({columns[1]}); keep one definition, or name the tables apart"
                )


def _tables(metadatas: Iterable[MetaData]) -> list[Table]:
    """Every table once (the first definition of a name), each metadata in dependency order."""
    tables: dict[str, Table] = {}
    for metadata in metadatas:
        for table in metadata.sorted_tables:
            tables.setdefault(table.key, table)
    return list(tables.values())


def _reason(exc: Exception) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return (str(original).strip() or type(original).__name__).splitlines()[0]


def create_tables(database: TestDatabase, metadatas: list[MetaData]) -> None:
    """Create the schemas and tables of ``metadatas`` in the test database (once per MetaData);
    a failure is one line that names the table."""
    todo = [m for m in metadatas if id(m) not in database.schemas]
    if not todo:
        return
    tables = _tables(todo)
    schemas = sorted({table.schema for table in tables if table.schema})

    async def create() -> None:
        engine = make_engine(database.url)
        try:
            async with engine.begin() as connection:
                if schemas and connection.dialect.name == "sqlite":
                    named = next(t for t in tables if t.schema)
                    raise DatabaseConfigError(
                        f"table {named.key}: SQLite has no schema {named.schema!r}; test the "
                        "models that name a schema on PostgreSQL (--db-url postgresql+asyncpg://...)"
                    )
                if schemas and connection.dialect.name == "mysql":
                    named = next(t for t in tables if t.schema)
                    raise DatabaseConfigError(
                        f"table {named.key}: on MySQL the schema {named.schema!r} is another "
                        "database, outside the run's throwaway test database, which the plugin does "
                        "not create; test the models that name a schema on PostgreSQL"
                    )
                for schema in schemas:
                    try:
                        await connection.execute(CreateSchema(schema, if_not_exists=True))
                    except SQLAlchemyError as exc:
                        raise DatabaseConfigError(
                            f"cannot create schema {schema!r} for its tables: {_reason(exc)}"
                        ) from None
                for table in tables:
                    try:
                        await connection.run_sync(table.create, checkfirst=True)
                    except SQLAlchemyError as exc:
                        raise DatabaseConfigError(
                            f"cannot create table {table.key}: {_reason(exc)}"
                        ) from None
        finally:
            await engine.dispose()

    run_coroutine(create)
    database.schemas.update(id(m) for m in todo)
