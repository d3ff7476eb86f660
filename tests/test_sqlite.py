"""The SQLite fixes are needed, and they work: shown on a real SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from recipes.demo.models import Base
from recipes import sqlite
from recipes.sqlite import enable_sqlite_fixes
from recipes.transactions import bind_sessionmaker, rollback_transaction

async def _leaked_rows(url: str, fixed: bool) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    if fixed:
        enable_sqlite_fixes(engine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with rollback_transaction(engine) as connection:
        async with bind_sessionmaker(connection)() as session:
            await session.execute(text("INSERT INTO users (email, name) VALUES ('a@x.org', 'a')"))
            await session.commit()  # RELEASE SAVEPOINT
    async with engine.connect() as connection:
        leaked = await connection.scalar(text("SELECT count(*) FROM users"))
    await engine.dispose()
    return leaked


@pytest.mark.asyncio
async def test_without_the_fix_a_savepoint_commit_survives_the_rollback(tmp_path):
    assert await _leaked_rows(f"sqlite+aiosqlite:///{tmp_path / 'legacy.db'}", fixed=False) == 1


@pytest.mark.asyncio
async def test_with_the_fix_nothing_survives(tmp_path):
    assert await _leaked_rows(f"sqlite+aiosqlite:///{tmp_path / 'fixed.db'}", fixed=True) == 0


@pytest.mark.asyncio
@pytest.mark.backends("sqlite")
async def test_foreign_keys_are_enforced_on_every_connection(db_connection):
    assert await db_connection.scalar(text("PRAGMA foreign_keys")) == 1
    with pytest.raises(IntegrityError):
        await db_connection.execute(
            text("INSERT INTO posts (author_id, title, body, likes) VALUES (999, 't', '', 0)")
        )


def test_the_fix_is_idempotent_and_ignores_other_dialects():
    sqlite_engine = create_async_engine("sqlite+aiosqlite://")
    enable_sqlite_fixes(sqlite_engine)
    enable_sqlite_fixes(sqlite_engine)  # twice: still one BEGIN per transaction
    assert event.contains(sqlite_engine.sync_engine, "begin", sqlite._on_begin)
    pg_engine = create_async_engine("postgresql+asyncpg://u@localhost/db")
    enable_sqlite_fixes(pg_engine)
    assert not event.contains(pg_engine.sync_engine, "begin", sqlite._on_begin)
