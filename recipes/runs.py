"""Which test database a process of a test run uses: its name, its mark, and its schema's hash.

A run is one ``pytest`` command. Under pytest-xdist it is several processes: the controller,
which runs no tests, and the workers ``gw0``, ``gw1``..., each with a test database of its own.
A :class:`Run` says which of them this process is, and names every database accordingly:

==============================  =========================  ===================
                                one process                worker gw0
==============================  =========================  ===================
throwaway (the default)         ``app_test_<pid>``         ``app_test_<pid>_gw0``
kept (``--reuse-db``)           ``app_test``               ``app_test_gw0``
schema built once (xdist)       -                          ``app_test_<pid>_template``
==============================  =========================  ===================

``<pid>`` is the controller's process id: a run's databases all carry it, so the controller
removes every one of them at the end (a crashed worker's too), and the next run on this host
removes those of a run that was killed. Databases kept by ``--reuse-db`` carry no pid: they
are the point of the option, and are removed only by ``--create-db`` (rebuilt) or by hand.

:func:`schema_fingerprint` hashes what the schema is built from (the DDL of the models, or
the migration scripts): a kept database is reused while it matches, and rebuilt when it does
not. Nothing here connects to a database; :mod:`recipes.janitor` and :mod:`recipes.workers`
do.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

__all__ = ["MARK", "Run", "parse_mark", "schema_fingerprint"]

MARK = "recipes test database"  # how every database the plugin creates is marked as its own


@dataclass(frozen=True)
class Run:
    """This process's part in the test run (see the module docstring)."""

    owner: int = field(default_factory=os.getpid)  # the run's pid: xdist's controller, or this process
    worker: str | None = None  # "gw0"... under pytest-xdist
    reuse: bool = False  # --reuse-db: keep the test databases, reuse them while the schema matches
    create: bool = False  # --create-db: rebuild them even if they match
    shared: Path | None = None  # a folder every process of the run sees (the schema's lock)

    def name(self, base: str, number: int = 1, role: str | None = None, limit: int = 63) -> str:
        """The test database beside ``base``: ``role`` is ``"template"`` for the schema built
        once; ``number`` tells apart two URLs of one run naming one database. At most ``limit``
        characters (PostgreSQL's 63 bytes, MySQL's 64): the base name gives way."""
        parts = ["test"]
        if not self.reuse:
            parts.append(str(self.owner))
        if role or self.worker:
            parts.append(role or self.worker or "")
        if number > 1:
            parts.append(str(number))
        suffix = "_" + "_".join(parts)
        return base[: limit - len(suffix)] + suffix

    def mark(self, fingerprint: str | None = None) -> str:
        """What marks a database as this run's: ``pid=`` for a throwaway one, ``reuse`` (and
        the run that built it, ``run=``) for a kept one; ``schema=`` once its schema is built."""
        owner = f"reuse; run={self.owner}" if self.reuse else f"pid={self.owner}"
        mark = f"{MARK}; {owner}; host={socket.gethostname()}"
        return mark + (f"; schema={fingerprint}" if fingerprint else "")


def parse_mark(comment: str | None) -> dict[str, str] | None:
    """A mark's fields (``pid``, ``host``, ``schema``, ``reuse``), or None if not ours."""
    if not comment or not comment.startswith(MARK):
        return None
    fields = {}
    for part in comment.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        fields[key] = value
    return fields


def schema_fingerprint(dialect: Dialect, metadatas: Iterable[MetaData] = (), alembic_ini: Path | None = None) -> str:
    """A short hash of what the test schema is built from: the ``CREATE`` statements of the
    models' tables and indexes for ``dialect``, or the bytes of the migration scripts and of
    ``alembic.ini``. A change to a column, a type, an index or a migration changes it."""
    digest = hashlib.sha256(dialect.name.encode())
    if alembic_ini is not None:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        folder = Path(ScriptDirectory.from_config(Config(str(alembic_ini))).dir)
        digest.update(alembic_ini.read_bytes())
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    seen: set[str] = set()
    for metadata in metadatas:
        for table in metadata.sorted_tables:
            if table.key in seen:
                continue
            seen.add(table.key)
            digest.update(str(CreateTable(table).compile(dialect=dialect)).encode())
            for index in sorted(table.indexes, key=lambda index: str(index.name)):
                digest.update(str(CreateIndex(index).compile(dialect=dialect)).encode())
    return digest.hexdigest()[:16]
