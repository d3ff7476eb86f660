"""pytest-xdist and ``--reuse-db``: a test database per worker, the schema built once.

Under ``pytest -n 2`` every worker has a test database of its own (named with its id:
:mod:`recipes.runs`), so tests on two workers never see each other's rows. Building the
schema is the slow part of starting a worker (``alembic upgrade head`` can take seconds), so
it is built once per run and copied:

- PostgreSQL: the first worker to get there builds a *template* database under a file lock;
  each worker's database is then ``CREATE DATABASE ... TEMPLATE`` of it, which copies files
  and runs no DDL;
- SQLite: the template is a file, and each worker copies it;
- MySQL and MariaDB have no template databases, and an embedded PostgreSQL is a server of the
  worker's own: each worker builds its schema itself.

``--reuse-db`` keeps the test databases between runs (named without a pid) with the hash of
what their schema was built from (:func:`recipes.runs.schema_fingerprint`): the next run
reuses them while the models or migrations are unchanged, and rebuilds them when they
changed. ``--create-db`` rebuilds them anyway. The in-memory SQLite default is rebuilt every
run: it lives in RAM and costs milliseconds.

Nothing is left behind: the controller drops every database the run marked at the end (a
crashed worker's too), and the next run on this host drops those of a run that was killed
(:func:`recipes.janitor.create_test_database`).

Pitfall: the template is read while it is cloned, so nothing may stay connected to it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from sqlalchemy import URL, make_url

from .databases import EMBEDDED_POSTGRES, TestDatabase, is_memory, sqlite_test_path, memory_folder, remove_sqlite
from . import mysql
from .janitor import (
    build_template,
    clone_database,
    database_mark,
    drop_run_databases,
    mark_database,
    rebuild_database,
)
from .runs import Run

__all__ = ["build_schema", "run_of", "sweep", "templated"]

_INPUT = "recipes_run"  # the key the controller passes its run under, in each worker's workerinput


def run_of(config: pytest.Config) -> Run:
    """This process's part in the run: a worker gets its owner and shared folder from the
    controller (:func:`pytest_configure_node`); ``--reuse-db`` and ``--create-db`` from the
    command line."""
    reuse, create = bool(config.getoption("recipes_reuse_db")), bool(config.getoption("recipes_create_db"))
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return Run(reuse=reuse or create, create=create)
    given = workerinput.get(_INPUT) or {}  # absent if the controller did not load the plugin
    return Run(
        owner=given.get("owner", os.getpid()),
        worker=workerinput["workerid"],
        reuse=reuse or create,
        create=create,
        shared=Path(given["shared"]) if "shared" in given else None,
    )


def templated(raw: str) -> bool:
    """Whether workers on this configured database copy a template (PostgreSQL, SQLite)."""
    return raw != EMBEDDED_POSTGRES and make_url(raw).get_backend_name() in ("postgresql", "sqlite")


def build_schema(database: TestDatabase, fingerprint: str, build: Callable[[URL], None]) -> None:
    """The schema in ``database``: ``build(url)`` builds it in an empty database (see the
    module docstring for when that happens once per run, and when not at all)."""
    run, raw = database.run, database.requested
    if database.dialect == "sqlite":
        _build_sqlite(database, fingerprint, build)
    elif templated(raw):
        server = make_url(raw)
        server = server.set(database=server.database or "postgres")
        name = str(database.url.database)
        kept = (database_mark(server, name) or {}) if run.reuse else {}
        if run.reuse and not run.create and kept.get("schema") == fingerprint:
            return  # kept from an earlier run, and built from what the schema is built from now
        if run.worker and run.shared:
            template = run.name(str(server.database), database.number, role="template")
            with _lock(run, template):  # one worker builds it; the others wait, then copy it
                found = database_mark(server, template) or {}
                ready = (found.get("schema") == fingerprint and "building" not in found
                         and (not run.create or found.get("run") == str(run.owner)))  # --create-db: built by this run
                if not ready:
                    build_template(server, template, run.mark(fingerprint), build)
            clone_database(server, template, name, run.mark(fingerprint))  # copies run side by side
            return
        if kept.get("schema"):  # kept, from other models or migrations: start from empty
            rebuild_database(server, name, run.mark())
        build(database.url)
        if run.reuse:
            mark_database(server, name, run.mark(fingerprint))
    else:
        build(database.url)


def _build_sqlite(database: TestDatabase, fingerprint: str, build: Callable[[URL], None]) -> None:
    run, path = database.run, Path(str(database.url.database))
    if run.reuse and not run.create and _stamp(path) == fingerprint:
        return
    if run.worker and run.shared:
        requested = make_url(database.requested)
        template = (memory_folder() / f"recipes-{run.owner}-template.sqlite" if is_memory(requested)
                    else sqlite_test_path(requested, run, role="template").resolve())
        with _lock(run, template.name):
            built, found = f"{fingerprint} {run.owner}", _stamp(template) or ""  # and by which run
            if found.split(" ")[0] != fingerprint or (run.create and found != built):  # --create-db: this run's
                _new_sqlite(template, journal="DELETE")  # one file, nothing in a WAL beside it
                build(database.url.set(database=str(template)))
                Path(f"{template}.schema").write_text(built)
            remove_sqlite(path)
            shutil.copyfile(template, path)
        _new_sqlite(path, journal="WAL", keep=True)
    else:
        if _stamp(path) is not None:  # kept, from other models or migrations: start from empty
            _new_sqlite(path, journal="WAL")
        build(database.url)
    Path(f"{path}.schema").write_text(fingerprint)


def _stamp(path: Path) -> str | None:
    """The schema hash a SQLite test database was built with (a file beside it)."""
    with suppress(OSError):
        return Path(f"{path}.schema").read_text()
    return None


def _new_sqlite(path: Path, journal: str, keep: bool = False) -> None:
    """An empty SQLite database at ``path`` (or, with ``keep``, the one there) in ``journal`` mode."""
    if not keep:
        remove_sqlite(path)
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA journal_mode={journal}")
    connection.close()


def _lock(run: Run, name: str) -> FileLock:
    assert run.shared is not None
    return FileLock(run.shared / f"{name}.lock")


# -- the controller: what it hands its workers, and what it removes at the end ---------------
_SHARED = pytest.StashKey[Path]()


class Controller:
    """Registered on the xdist controller only (it has the ``pytest_configure_node`` hook)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_configure_node(self, node: Any) -> None:
        if _SHARED not in self.config.stash:
            self.config.stash[_SHARED] = Path(tempfile.mkdtemp(prefix="recipes-xdist-"))
        node.workerinput[_INPUT] = {"owner": os.getpid(), "shared": str(self.config.stash[_SHARED])}


def sweep(config: pytest.Config, urls: list[str]) -> None:
    """At the end of an xdist run, on the controller: remove every test database this run
    marked (workers drop their own; a crashed one's, and the template, are left to this)."""
    shared = config.stash.get(_SHARED, None)
    if shared is None:
        return  # no worker was started
    owner = os.getpid()
    for raw in urls:
        if raw == EMBEDDED_POSTGRES:
            continue  # each worker's own server, stopped by the worker (or its leftovers by the next)
        url = make_url(raw)
        with suppress(Exception):  # a server gone down meanwhile: the next run removes them
            if url.get_backend_name() == "postgresql":
                drop_run_databases(url.set(database=url.database or "postgres"), owner)
            elif url.get_backend_name() in ("mysql", "mariadb"):
                mysql.drop_run_databases(url, owner)
        if url.get_backend_name() == "sqlite":
            folder, pattern = (
                (memory_folder(), f"recipes-{owner}-*") if is_memory(url)
                else (Path(url.database or "").resolve().parent, f"{Path(url.database or '').stem}_test_{owner}_*")
            )
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
    shutil.rmtree(shared, ignore_errors=True)
