"""Constraint tests: assert *which* constraint a block violates, and let the test go on.

``async with expect_violation(session, "ck_posts_likes_not_negative"):`` runs the block in a
savepoint (``begin_nested()``), flushes it at the end, and passes only if the database refused
it for that constraint. The violation rolls back the savepoint, and only it: rows the test wrote
before stay, and the session (or connection) stays usable. What was pending in the session
before the block is flushed first, outside the savepoint, so that its errors are never taken for
the block's. The block's value is the :class:`Violation` the database reported, filled in when
the block ends.

The target is a constraint name, or ``"table.column"`` (``"table.a, table.b"`` for several
columns); ``kind=`` (one of :data:`KINDS`) narrows a column with two rules, such as a foreign
key that is also NOT NULL. What each database reports, and so what can be checked:

- PostgreSQL (asyncpg and psycopg): the kind (from the SQLSTATE), the constraint's name and its
  table; the columns for NOT NULL, and for unique and foreign keys from the detail line
  ``Key (email)=(...) already exists.``. A value too long for ``String(n)`` is refused with
  SQLSTATE 22001 (``DBAPIError`` on asyncpg, ``DataError`` on psycopg), naming only the type:
  ``value too long for type character varying(64)``.
- SQLite: a message only. ``UNIQUE constraint failed: users.email`` and ``NOT NULL constraint
  failed: posts.title`` name the columns, ``CHECK constraint failed: ck_posts_likes_not_negative``
  the CHECK's name (its expression if it has none), and ``FOREIGN KEY constraint failed``
  nothing at all (and only with ``PRAGMA foreign_keys=ON``). SQLite does not enforce lengths.
- MySQL and MariaDB (aiomysql and asyncmy): an error code and a message. Foreign keys (1451,
  1452) name the constraint, the table and the columns; CHECK constraints (3819 on MySQL,
  4025 on MariaDB, which SQLAlchemy raises as ``OperationalError``) the constraint's name, and
  the table on MariaDB; NOT NULL (1048, or 1364 for a column left out) and a value too long
  (1406, ``Data too long for column 'title'``) the column only; unique (1062) the key's name:
  the constraint's, or for an unnamed one the server's own (the first column's, ``PRIMARY``),
  prefixed with the table on MySQL 8. The table, where the message does not name it, is the
  one the failing ``INSERT`` or ``UPDATE`` writes; a unique key's columns come from the
  metadata (a named key), or are the target's own column where the key has MySQL's default
  name, that column's (an inference: an unnamed key over several columns is named after its
  first). An unnamed CHECK is named by the server (``CONSTRAINT_1``,
  ``things_chk_1``): name them.

So a test written once passes on both when it names unique, NOT NULL and foreign-key
constraints as ``"table.column"`` and CHECK constraints by name (SQLite repeats a CHECK's name,
not a default one: name them). Where the report says too little (SQLite's foreign keys,
PostgreSQL's lengths, a foreign key that still has rows pointing at it), the recipe relates it
to the target through ``metadata``, the tables of the models: the violation must be of a kind
the target can raise (a foreign key of that column, a ``String`` of that length). That is an
inference, and the recipe cannot tell two foreign keys of one statement apart on SQLite.
Without ``metadata`` such a report fails the test, saying so.

Failures say what happened: a violation of another constraint (both named, with the database's
own words), no violation at all, or another database error (chained). A target the metadata does
not know (``"users.mail"``) or an unknown ``kind`` raises ValueError before the block runs.

Pitfalls:

- ``pytest.raises(IntegrityError)`` passes for *any* constraint: a test of the CHECK whose post
  also lacks a title passes on the NOT NULL violation and tests nothing.
- Without a savepoint, an AsyncSession refuses everything after the failed flush
  (``PendingRollbackError``), and ``session.rollback()`` also discards the rows the test
  flushed before. On a connection PostgreSQL refuses every statement until the rollback
  (``current transaction is aborted``); SQLite goes on, so a test can pass there only.
- The block is flushed at the end; do not catch the error inside it. Code under test that
  catches the IntegrityError itself (a service raising a domain error) is tested with
  ``pytest.raises(DomainError)`` instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import (
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["KINDS", "Violation", "expect_violation", "read_violation"]

KINDS = ("unique", "foreign_key", "not_null", "check", "too_long")
_SQLSTATES = {"23505": "unique", "23503": "foreign_key", "23502": "not_null", "23514": "check",
              "22001": "too_long"}
_SQLITE = re.compile(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?:: (.+))?")
_SQLITE_KINDS = {"UNIQUE": "unique", "FOREIGN KEY": "foreign_key", "NOT NULL": "not_null",
                 "CHECK": "check"}
# SQLAlchemy 2.0's asyncpg errors begin "<class 'asyncpg.exceptions.UniqueViolationError'>: "
# MySQL and MariaDB: the error code, and what its message names
_MYSQL_KINDS = {1062: "unique", 1586: "unique", 1451: "foreign_key", 1452: "foreign_key",
                1048: "not_null", 1364: "not_null", 3819: "check", 4025: "check", 1406: "too_long"}
_MYSQL_KEY = re.compile(r"for key '(?:(\w+)\.)?([^']+)'")
_MYSQL_FOREIGN = re.compile(r"\(`[^`]*`\.`([^`]+)`, CONSTRAINT `([^`]+)` FOREIGN KEY \(([^)]+)\)")
_MYSQL_CHECK = re.compile(r"(?:Check constraint '([^']+)'|CONSTRAINT `([^`]+)` failed for `[^`]*`\.`([^`]+)`)")
_MYSQL_COLUMN = re.compile(r"(?:Column|column|Field) '([^']+)'")
_MYSQL_TARGET = re.compile(r"\s*(?:INSERT\s+(?:IGNORE\s+)?INTO|UPDATE|REPLACE\s+INTO)\s+`?(\w+)`?\s", re.I)
_CLASS_PREFIX = re.compile(r"^<class '[\w.]+'>: ")
_WORDS = {"unique": "unique violation", "foreign_key": "foreign key violation",
          "not_null": "not-null violation", "check": "check violation",
          "too_long": "value too long"}


@dataclass
class Violation:
    """What the database reported as violated: as much as the dialect says, and no more."""

    kind: str = ""  # one of KINDS
    constraint: str | None = None  # PostgreSQL: always; SQLite: CHECK constraints only
    table: str | None = None
    columns: tuple[str, ...] = ()  # empty where the database does not say
    message: str = ""  # the database's own words, first line

    def __post_init__(self) -> None:
        # the database's words only, on SQLAlchemy 2.0 as on 2.1 (read_violation stays as taught)
        self.message = _CLASS_PREFIX.sub("", self.message)

    def __str__(self) -> str:
        where = ", ".join(f"{self.table}.{column}" if self.table else column
                          for column in self.columns) or self.table
        return (f"{_WORDS.get(self.kind, self.kind)}"
                f"{f' of {self.constraint}' if self.constraint else ''}"
                f"{f' on {where}' if where else ''} ({self.message!r})")


# --8<-- [start:read_violation]
def read_violation(error: DBAPIError) -> Violation | None:
    """The constraint violation ``error`` reports, or None if it reports none."""
    orig = error.orig
    message = (str(orig).splitlines() or [""])[0]
    sqlstate = getattr(orig, "sqlstate", None)  # PostgreSQL, through asyncpg or psycopg
    if sqlstate in _SQLSTATES:
        # psycopg keeps the fields in .diag; SQLAlchemy's asyncpg error wraps asyncpg's own
        fields = getattr(orig, "diag", None) or orig.__cause__
        table, column, name = (getattr(fields, attribute, None)
                               for attribute in ("table_name", "column_name", "constraint_name"))
        detail = getattr(fields, "message_detail", None) or getattr(fields, "detail", None) or ""
        # "Key (a, b)=(1, 2) already exists." names the columns, "... is still referenced" not
        key = re.match(r"Key \((.+?)\)=\(.*\) (already exists|is not present)", detail)
        columns = (column,) if column else _split(key[1]) if key else ()
        return Violation(_SQLSTATES[sqlstate], name, table, columns, message)
    found = _SQLITE.match(message)  # SQLite: the message is all there is
    if found is None:
        return None
    kind, named = _SQLITE_KINDS[found[1]], found[2] or ""
    if kind == "check":
        return Violation(kind, named or None, None, (), message)
    pairs = [part.strip().rpartition(".") for part in named.split(",")] if named else []
    table = pairs[0][0] if pairs else None
    return Violation(kind, None, table, tuple(pair[2] for pair in pairs), message)
# --8<-- [end:read_violation]


def _mysql_violation(kind: str, message: str) -> Violation:
    """What a MySQL or MariaDB message names (see the module docstring)."""
    if kind == "unique" and (key := _MYSQL_KEY.search(message)):
        return Violation(kind, key[2], key[1], (), message)
    if kind == "foreign_key" and (foreign := _MYSQL_FOREIGN.search(message)):
        return Violation(kind, foreign[2], foreign[1], _split(foreign[3]), message)
    if kind == "check" and (check := _MYSQL_CHECK.search(message)):
        return Violation(kind, check[1] or check[2], check[3], (), message)
    column = _MYSQL_COLUMN.search(message)
    return Violation(kind, None, None, (column[1],) if column else (), message)


# MySQL and MariaDB: their errors carry a code, and their SQLSTATEs (22001 for 1406) would
# read as PostgreSQL's. Layered on the snippet above, which the chapter teaches as it is (and
# whose source inspect still shows: functools.wraps).
_read_postgresql_or_sqlite = read_violation


@functools.wraps(_read_postgresql_or_sqlite)
def read_violation(error: DBAPIError) -> Violation | None:  # noqa: F811
    args = getattr(error.orig, "args", None) or (None,)
    if not isinstance(args[0], int):  # MySQL's are (code, message)
        return _read_postgresql_or_sqlite(error)
    if args[0] not in _MYSQL_KINDS:
        return None
    violation = _mysql_violation(_MYSQL_KINDS[args[0]], str(args[1]).splitlines()[0])
    target = _MYSQL_TARGET.match(error.statement or "")  # the table the statement writes
    violation.table = violation.table or (target[1] if target else None)
    return violation


def _split(columns: str) -> tuple[str, ...]:
    return tuple(column.strip().strip('"`') for column in columns.split(","))


# --8<-- [start:expect_violation]
@asynccontextmanager
async def expect_violation(
    bind: AsyncSession | AsyncConnection, target: str, *, kind: str | None = None,
    metadata: MetaData | Iterable[MetaData] | None = None,
) -> AsyncIterator[Violation]:
    """Fail unless the block violates ``target``, a constraint name or ``"table.column"``
    (and is of ``kind``, one of KINDS, if given). Only the block is rolled back."""
    __tracebackhide__ = True
    expected = _Target.parse(target, kind, metadata)
    if isinstance(bind, AsyncSession):
        await bind.flush()  # what was pending before the block fails here, not as the block's
    reported = Violation()
    try:
        async with bind.begin_nested():  # the savepoint: a violation rolls back to here
            yield reported
    except DBAPIError as error:
        violation = read_violation(error)
        if violation is None:
            raise AssertionError(f"expected {expected}, but the database raised "
                                 f"{type(error.orig).__name__}: {error.orig}") from error
        vars(reported).update(vars(violation))
        expected.check(reported)
        return
    raise AssertionError(f"expected {expected}, but the block ran without one"
                         + expected.unenforced(bind))
# --8<-- [end:expect_violation]


@dataclass
class _Target:
    """What the test expects, with what the metadata knows about it."""

    text: str
    kind: str | None
    name: str | None = None  # a constraint name, as a database would report it
    table: str | None = None
    columns: tuple[str, ...] = ()
    kinds: frozenset[str] | None = None  # what it can violate, per the metadata; None: unknown
    length: int | None = None  # String(n): n
    keys: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # named keys' columns

    @classmethod
    def parse(
        cls, text: str, kind: str | None, metadata: MetaData | Iterable[MetaData] | None
    ) -> _Target:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
        metadatas = [metadata] if isinstance(metadata, MetaData) else list(metadata or ())
        tables = {table.name: table for m in metadatas for table in m.tables.values()}
        keys = {(table.name, key.name): tuple(column.name for column in key.columns)
                for table in tables.values() for key in [*table.constraints, *table.indexes]
                if isinstance(key.name, str)}
        if "." not in text:  # a constraint's name: the metadata may say where it is
            target = cls(text, kind, name=text, keys=keys)
            for table in tables.values():
                for constraint in [*table.constraints, *table.indexes]:
                    if constraint.name == text:
                        target.table = table.name
                        target.columns = tuple(column.name for column in constraint.columns)
                        target.kinds = frozenset([_kind_of(constraint)])
            return target
        pairs = [part.strip().rpartition(".") for part in text.split(",")]
        target = cls(text, kind, table=pairs[0][0], columns=tuple(p[2] for p in pairs), keys=keys)
        table = tables.get(target.table or "")
        if tables and (table is None or not set(target.columns) <= set(table.c.keys())):
            raise ValueError(f"{text!r}: the metadata has no such table or column")
        if table is not None:
            target.kinds = _kinds_of(table, target.columns)
            target.length = getattr(table.c[target.columns[0]].type, "length", None)
        return target

    def __str__(self) -> str:
        return f"a violation of {self.text!r}" + (f" ({self.kind})" if self.kind else "")

    def check(self, reported: Violation) -> None:
        """Raise AssertionError unless ``reported`` is the expected violation."""
        __tracebackhide__ = True
        if reported.kind == "unique" and reported.table and reported.constraint and not reported.columns:
            # MySQL names the key only: its columns, from the metadata or its default name
            own = (reported.constraint,) if self.columns == (reported.constraint,) else ()
            reported.columns = self.keys.get((reported.table, reported.constraint), own)
        problem = self._mismatch(reported)
        if problem is not None:
            raise AssertionError(f"expected {self}, but the database reported a "
                                 f"{reported}{problem}") from None

    def _mismatch(self, got: Violation) -> str | None:
        """None if ``got`` matches; else what to add to the failure message ("" for nothing)."""
        if self.kind and got.kind != self.kind:
            return ""
        if self.kinds is not None and got.kind not in self.kinds:
            return ""
        if got.constraint and self.name:
            return None if got.constraint == self.name else ""
        if got.table and got.columns and self.table and self.columns:
            return None if (got.table, got.columns) == (self.table, self.columns) else ""
        # The report does not say which constraint: only the kind, the table and a length are left.
        if self.kinds is None:  # and without the metadata, nothing relates them to the target
            if self.name and not got.constraint and got.kind in ("unique", "foreign_key"):
                return (f"; it names no constraint, and {self.name!r} is not a constraint of the "
                        "metadata: expect it as 'table.column', or pass the metadata")
            if self.table and not (got.table and got.columns):
                return f"; it does not say enough to relate it to {self.text!r}: pass the metadata"
            return ""
        if got.table and self.table and got.table != self.table:
            return ""
        if got.columns and self.columns and got.columns != self.columns:  # MySQL: a column, no table
            return ""
        declared = _declared_length(got.message)  # PostgreSQL's; MySQL names the column instead
        if got.kind == "too_long" and (declared != self.length if declared else not got.columns):
            return ""
        return None

    def unenforced(self, bind: AsyncSession | AsyncConnection) -> str:
        """Why a block may run without the expected violation, where the database says so."""
        connection = bind.sync_session.get_bind() if isinstance(bind, AsyncSession) else bind
        if self.kind == "too_long" and connection.dialect.name == "sqlite":
            return " (SQLite does not enforce the length of String(n) or VARCHAR(n))"
        return ""


def _kind_of(constraint: object) -> str:
    if isinstance(constraint, ForeignKeyConstraint):
        return "foreign_key"
    if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint | Index):
        return "unique"  # a non-unique index is never violated; its name is not a constraint's
    return "check"


def _kinds_of(table: Table, columns: tuple[str, ...]) -> frozenset[str]:
    """The kinds of violation that name exactly these columns of ``table``."""
    wanted, kinds = set(columns), set()
    for constraint in [*table.constraints, *table.indexes]:
        unique = isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) or (
            isinstance(constraint, Index) and constraint.unique)
        if {column.name for column in constraint.columns} == wanted and (
                unique or isinstance(constraint, ForeignKeyConstraint)):
            kinds.add(_kind_of(constraint))
    if len(columns) == 1:
        column = table.c[columns[0]]
        if not column.nullable:
            kinds.add("not_null")
        if getattr(column.type, "length", None):
            kinds.add("too_long")
    return frozenset(kinds)


def _declared_length(message: str) -> int | None:
    found = re.search(r"\((\d+)\)$", message)  # "value too long for type character varying(64)"
    return int(found[1]) if found else None
