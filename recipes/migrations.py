"""Migration tests for Alembic, async, on the test database, on every dialect.

Alembic's command API is sync, and an async ``env.py`` starts its own event loop with
``asyncio.run()``, which fails inside a test ("asyncio.run() cannot be called from a running
event loop"). So every helper here runs Alembic through ``AsyncConnection.run_sync``, with the
sync connection in ``config.attributes["connection"]``, and the ``env.py`` must run the
migrations on it when it is there (Alembic's cookbook, "connection sharing")::

    connectable = config.attributes.get("connection")
    if connectable is None:
        asyncio.run(run_async_migrations())   # the command line
    else:
        do_run_migrations(connectable)         # a test: its connection, its transaction

What a caller may rely on:

- :func:`upgrade` and :func:`downgrade` take a connection (they run inside its transaction;
  the caller commits or rolls back) or a URL (a transaction of their own, committed).
- :func:`check_single_head`: the history has one head; otherwise the heads are named.
- :func:`check_stairway`: every revision, oldest first, is upgraded to, downgraded and
  upgraded again; the first revision that fails, or whose downgrade does not restore the
  schema it started from, is named with what is wrong.
- :func:`check_no_drift`: after ``upgrade head`` the database matches the models
  (``alembic.autogenerate.compare_metadata`` finds nothing); otherwise each difference is
  listed in words.
- :func:`check_data_migration`: rows inserted at the revision before, checked after it (and,
  optionally, after its downgrade).
- The checks start from an empty schema (they drop the tables they find, the plugin's
  ``create_all`` schema included) and leave the database as they found it: on a connection
  they run in a savepoint, on a URL in a transaction, rolled back at the end.
- An ``env.py`` that calls ``asyncio.run()`` anyway, or that runs nothing on the connection it
  was handed (it connected elsewhere), is refused with a line that says so.

Pitfalls:

- The checks need DDL that rolls back: PostgreSQL has it, SQLite has it once
  :func:`recipes.sqlite.enable_sqlite_fixes` is applied (the plugin's engines and
  :func:`recipes.databases.make_engine` have it); without it the dropped tables stay dropped.
- SQLite cannot ALTER a column or a constraint: migrations use ``op.batch_alter_table``, and
  ``env.py`` sets ``render_as_batch=True`` so that autogenerate writes it.
- A data migration's rows are inserted as the revision before knew the tables, with SQL or
  ``sa.table()``: the models describe the newest schema, and an insert through them names
  columns that do not exist yet.
- ``compare_metadata`` does not see everything: CHECK constraints, server defaults (unless
  ``compare_server_default=True``), renames (it sees a drop and an add).
- The stairway compares tables, columns (type, nullability), indexes, unique and foreign keys
  and named CHECK constraints, on empty tables: a downgrade that loses data passes it. Test
  such revisions with :func:`check_data_migration` and ``reverted=``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import URL, Connection, MetaData, event, inspect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from .databases import make_engine

__all__ = [
    "MigrationError",
    "alembic_config",
    "check_data_migration",
    "check_no_drift",
    "check_single_head",
    "check_stairway",
    "describe_difference",
    "downgrade",
    "run_alembic",
    "upgrade",
]

Target = AsyncConnection | URL | str  # a connection, or the URL of the test database
Check = Callable[[AsyncConnection], Awaitable[Any]]


class MigrationError(AssertionError):
    """A migration check failed; ``str()`` names the revision and says what is wrong."""


def alembic_config(path: str | Path | Config = "alembic.ini") -> Config:
    """The Alembic configuration in the ini file ``path`` (a ``Config`` is returned as is)."""
    if isinstance(path, Config):
        return path
    if not Path(path).is_file():
        raise FileNotFoundError(f"no Alembic configuration at {Path(path).resolve()}")
    return Config(str(path))


# --8<-- [start:run_alembic]
async def run_alembic(
    connection: AsyncConnection, alembic_command: Callable[..., Any], config: Config, *args: Any
) -> None:
    """Run ``alembic_command(config, *args)`` (``command.upgrade``, ...) on ``connection``,
    inside its transaction: ``env.py`` finds it in ``config.attributes["connection"]``."""

    def run(sync_connection: Connection) -> None:
        config.attributes["connection"] = sync_connection
        try:
            with _url_of(config, sync_connection), _refuse_other_connections(sync_connection):
                alembic_command(config, *args)
        finally:
            del config.attributes["connection"]

    await connection.run_sync(run)


@contextmanager
def _url_of(config: Config, connection: Connection) -> Iterator[None]:
    """While Alembic runs, ``sqlalchemy.url`` names the connection's database: an env.py that
    ignores the connection and reads the ini's URL reaches the test database, never the one
    the ini names."""
    named = config.get_main_option("sqlalchemy.url")
    url = connection.engine.url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    try:
        yield
    finally:
        if named is None:
            config.remove_main_option("sqlalchemy.url")
        else:
            config.set_main_option("sqlalchemy.url", named.replace("%", "%%"))


@contextmanager
def _refuse_other_connections(connection: Connection) -> Iterator[None]:
    """Say what to do when env.py calls asyncio.run(), or runs nothing on ``connection``."""
    statements: list[str] = []

    def record(*event_args: Any) -> None:  # before_cursor_execute(conn, cursor, statement, ...)
        statements.append(event_args[2])

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield
    except RuntimeError as exc:
        if "asyncio.run() cannot be called" not in str(exc):
            raise
        raise RuntimeError(
            "env.py called asyncio.run() inside the test's event loop: make it run the "
            'migrations on config.attributes["connection"] when that is set'
        ) from exc
    finally:
        event.remove(connection, "before_cursor_execute", record)
    if not statements:  # env.py connected elsewhere: to which database?
        raise RuntimeError(
            'env.py ran no statement on config.attributes["connection"]: it must run the '
            "migrations on it (while it ran, the ini's sqlalchemy.url named the test database)"
        )
# --8<-- [end:run_alembic]


async def upgrade(target: Target, config: Config | str | Path, revision: str = "head") -> None:
    """``alembic upgrade revision`` on a connection (in its transaction) or a URL (committed)."""
    async with _connected(target) as connection:
        await run_alembic(connection, command.upgrade, alembic_config(config), revision)


async def downgrade(target: Target, config: Config | str | Path, revision: str) -> None:
    """``alembic downgrade revision`` on a connection (in its transaction) or a URL (committed)."""
    async with _connected(target) as connection:
        await run_alembic(connection, command.downgrade, alembic_config(config), revision)


@asynccontextmanager
async def _connected(target: Target, *, check: bool = False) -> AsyncIterator[AsyncConnection]:
    """The connection to run on. A check gets a savepoint (on a connection) or a transaction
    (on a URL), always rolled back; an upgrade or downgrade on a URL is committed. MySQL and
    MariaDB commit DDL implicitly: a check there would drop and alter for good, so it is refused."""
    dialect = target.dialect.name if isinstance(target, AsyncConnection) else make_url(target).get_backend_name()
    if check and dialect in ("mysql", "mariadb"):
        raise MigrationError(
            "MySQL and MariaDB commit DDL implicitly, so a migration check cannot roll back what it "
            "drops and alters: run the checks on PostgreSQL or SQLite (upgrade and downgrade work)"
        )
    if isinstance(target, AsyncConnection):
        if not check:
            yield target
            return
        savepoint = await target.begin_nested()
        try:
            yield target
        finally:
            await savepoint.rollback()
        return
    engine = make_engine(target)  # with the SQLite fixes: DDL inside a transaction rolls back
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            try:
                yield connection
            except BaseException:
                await transaction.rollback()
                raise
            await (transaction.rollback() if check else transaction.commit())
    finally:
        await engine.dispose()


@asynccontextmanager
async def _from_empty_schema(target: Target) -> AsyncIterator[AsyncConnection]:
    """A check's connection, on which every table of the default schema was dropped."""
    async with _connected(target, check=True) as connection:
        await connection.run_sync(_drop_all_tables)
        yield connection


def _drop_all_tables(connection: Connection) -> None:
    found = MetaData()
    found.reflect(connection)  # the plugin's create_all schema, an alembic_version, ...
    found.drop_all(connection)


def _name(revision: Script) -> str:
    return f"{revision.revision} ({(revision.doc or '').strip()})"


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


# --8<-- [start:checks]
def check_single_head(config: Config | str | Path) -> str:
    """The one head of the history; fails naming every head when there are several."""
    __tracebackhide__ = True
    script = ScriptDirectory.from_config(alembic_config(config))
    heads = [script.get_revision(head) for head in script.get_heads()]
    if len(heads) != 1:
        named = ", ".join(_name(head) for head in heads if head is not None) or "none"
        raise MigrationError(
            f"the history has {len(heads)} heads: {named}; "
            "merge them with: alembic merge heads -m 'merge'"
        )
    return heads[0].revision  # type: ignore[union-attr]


async def check_stairway(target: Target, config: Config | str | Path) -> list[str]:
    """Upgrade to every revision, oldest first, downgrade it and upgrade it again; return the
    revisions walked. Fails on the first revision that breaks, or whose downgrade does not
    restore the schema its upgrade started from."""
    __tracebackhide__ = True
    config = alembic_config(config)
    walked = []
    async with _from_empty_schema(target) as connection:
        for revision in reversed(list(ScriptDirectory.from_config(config).walk_revisions())):
            before = await connection.run_sync(_schema_facts)
            await _step(connection, config, revision, "upgrade", revision.revision)
            await _step(connection, config, revision, "downgrade", _one_step_down(revision))
            after = await connection.run_sync(_schema_facts)
            if after != before:
                raise MigrationError(
                    f"revision {_name(revision)}: its downgrade does not restore the schema "
                    f"before its upgrade: {_schema_difference(before, after)}"
                )
            await _step(connection, config, revision, "upgrade again", revision.revision)
            walked.append(revision.revision)
    return walked


async def check_no_drift(
    target: Target, config: Config | str | Path, metadata: MetaData, **options: Any
) -> None:
    """Upgrade an empty schema to head and compare it with ``metadata`` (the models); fail
    with every difference in words. ``options`` go to Alembic's migration context (for
    example ``compare_server_default=True``, ``include_object=...``)."""
    __tracebackhide__ = True
    async with _from_empty_schema(target) as connection:
        await run_alembic(connection, command.upgrade, alembic_config(config), "heads")
        differences = await connection.run_sync(_compare, metadata, options)
    if differences:
        dialect = connection.dialect
        listed = "".join(f"\n  - {describe_difference(d, dialect)}" for d in differences)
        raise MigrationError(
            f"the models and the migrations differ on {dialect.name} ({len(differences)} "
            f"difference{'s' * (len(differences) > 1)}):{listed}\n"
            "write a migration for each (alembic revision --autogenerate drafts one)"
        )


async def check_data_migration(
    target: Target, config: Config | str | Path, revision: str, *,
    before: Check, after: Check, reverted: Check | None = None,
) -> None:
    """Test the data migration ``revision``: upgrade to the revision before it and
    ``await before(connection)`` (insert rows, as that revision knows the tables); upgrade to
    ``revision`` and ``await after(connection)`` (check them); with ``reverted``, downgrade
    again and ``await reverted(connection)``."""
    __tracebackhide__ = True
    config = alembic_config(config)
    migration = _revision(config, revision)
    previous = (_parents(migration) or ("base",))[0]
    async with _from_empty_schema(target) as connection:
        await _step(connection, config, migration, "upgrade to the revision before", previous)
        try:
            await before(connection)
        except Exception as exc:
            raise MigrationError(_before_failed(previous, migration, exc)) from exc
        await _step(connection, config, migration, "upgrade with the rows of before()", revision)
        await after(connection)
        if reverted is not None:
            await _step(connection, config, migration, "downgrade with those rows", previous)
            await reverted(connection)
# --8<-- [end:checks]


def _revision(config: Config, revision: str) -> Script:
    script = ScriptDirectory.from_config(config)
    found = script.get_revision(revision)
    if found is None:
        raise MigrationError(f"no revision {revision!r} in {script.dir}")
    return found


def _parents(revision: Script) -> tuple[str, ...]:
    down = revision.down_revision
    return () if down is None else (down,) if isinstance(down, str) else tuple(down)


def _one_step_down(revision: Script) -> str:
    """Where a downgrade of only this revision goes, even with other branches applied."""
    parents = _parents(revision)
    if len(parents) > 1:  # a merge: to one parent; the others stay, being no descendants of it
        return parents[0]
    return f"{revision.revision}@-1"  # from a first revision, @-1 is base


async def _step(
    connection: AsyncConnection, config: Config, revision: Script, step: str, to: str
) -> None:
    """Upgrade (a step named "upgrade ...") or downgrade to ``to``; a failure names ``revision``."""
    __tracebackhide__ = True
    alembic_command = command.upgrade if step.startswith("upgrade") else command.downgrade
    try:
        await run_alembic(connection, alembic_command, config, to)
    except Exception as exc:
        message = f"revision {_name(revision)}: {step} failed: {_first_line(exc)}"
        raise MigrationError(message) from exc


def _before_failed(previous: str, migration: Script, exc: Exception) -> str:
    return (
        f"before() failed at revision {previous}, the one before {_name(migration)}: "
        f"{_first_line(exc)}. It runs on the tables as that revision made them, not as the "
        "models describe them: insert with SQL or sa.table(), naming only columns that exist there"
    )


# -- what a schema is made of, to compare before and after -----------------------------------

def _schema_facts(connection: Connection) -> set[str]:
    """The tables, columns, keys, indexes and constraints the connection sees, one string each."""
    inspector = inspect(connection)
    facts = set()
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        facts.add(f"table {table}")
        for column in inspector.get_columns(table):
            null = "NULL" if column["nullable"] else "NOT NULL"
            facts.add(f"column {table}.{column['name']} {column['type']} {null}")
        for index in inspector.get_indexes(table):
            columns = ", ".join(map(str, index["column_names"]))
            facts.add(f"index {index['name']} on {table}({columns})")
        for unique in inspector.get_unique_constraints(table):
            facts.add(f"unique constraint on {table}({', '.join(unique['column_names'])})")
        for key in inspector.get_foreign_keys(table):
            facts.add(
                f"foreign key {table}({', '.join(key['constrained_columns'])}) -> "
                f"{key['referred_table']}({', '.join(key['referred_columns'])})"
            )
        for check in inspector.get_check_constraints(table):
            facts.add(f"check constraint {check['name']} on {table}")
    return facts


def _schema_difference(before: set[str], after: set[str]) -> str:
    parts = []
    if after - before:
        parts.append("still there: " + "; ".join(sorted(after - before)))
    if before - after:
        parts.append("missing: " + "; ".join(sorted(before - after)))
    return ", ".join(parts)


# -- drift, in words --------------------------------------------------------------------------

def _compare(connection: Connection, metadata: MetaData, options: dict[str, Any]) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, **options})
    return compare_metadata(context, metadata)


def describe_difference(difference: Any, dialect: Any = None) -> str:
    """One difference found by ``compare_metadata``, in words: what the models say, and what
    the migrations made."""
    if isinstance(difference, list):  # a modify_* comes as a list of one tuple per change
        return "; ".join(describe_difference(d, dialect) for d in difference)
    kind, *args = difference
    in_models = "in the models, but no migration makes it"
    in_database = "made by the migrations, but not in the models"

    def sql(type_: Any) -> str:
        return type_.compile(dialect=dialect) if dialect is not None else str(type_)

    if kind in ("add_table", "remove_table"):
        return f"table {args[0].name}: {in_models if kind == 'add_table' else in_database}"
    if kind in ("add_column", "remove_column"):
        _, table, column = args
        return f"column {table}.{column.name}: {in_models if kind == 'add_column' else in_database}"
    if kind.endswith(("_index", "_constraint", "_fk")) and kind.startswith(("add_", "remove_")):
        item = args[0]
        what = {"index": "index", "constraint": "unique constraint", "fk": "foreign key"}[
            kind.split("_", 1)[1]
        ]
        name = f" {item.name}" if item.name else ""
        where = f"{item.table.name}({', '.join(column.name for column in item.columns)})"
        if kind.endswith("_fk"):
            where += " -> " + ", ".join(element.target_fullname for element in item.elements)
        return f"{what}{name} on {where}: {in_models if kind.startswith('add') else in_database}"
    if kind in ("modify_type", "modify_nullable", "modify_default", "modify_comment"):
        _, table, column, _, made, wanted = args
        if kind == "modify_type":
            made, wanted = sql(made), sql(wanted)
        elif kind == "modify_nullable":
            made, wanted = ("NULL" if v else "NOT NULL" for v in (made, wanted))
        else:
            made = getattr(getattr(made, "arg", made), "text", made)
            wanted = getattr(getattr(wanted, "arg", wanted), "text", wanted)
        what = {"modify_default": "server default ", "modify_comment": "comment "}.get(kind, "")
        said = f"the models say {what}{wanted}, the migrations make it {made}"
        return f"column {table}.{column}: {said}"
    return repr(difference)
