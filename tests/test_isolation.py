"""Every test is isolated, even when the code under test commits or rolls back.

Each claim is checked through ``observe``: a separate connection outside the test's
transaction, which must never see the test's rows.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from recipes.demo.models import Post, User
from recipes.demo.service import EmailTaken, count_users, publish_post, register_user
from recipes.transactions import bind_sessionmaker, rollback_transaction

pytestmark = pytest.mark.asyncio


async def test_a_commit_stays_inside_the_test(db_session, observe):
    await register_user(db_session, "ada@example.com")

    assert await count_users(db_session) == 1
    assert await observe("users") == 0


async def test_the_transaction_rolls_back_what_the_code_committed(db_engine, observe):
    async with rollback_transaction(db_engine) as connection:
        async with bind_sessionmaker(connection)() as session:
            user = await register_user(session, "ada@example.com")
            await publish_post(session, user.id, "Hello")
        assert await observe("posts") == 0

    # What the teardown of db_connection leaves for the next test: nothing.
    assert await observe("users") == 0
    assert await observe("posts") == 0


async def test_an_application_rollback_keeps_the_rows_the_test_seeded(db_session, observe):
    db_session.add(User(email="seeded@example.com", name="seeded"))
    await db_session.commit()

    with pytest.raises(EmailTaken):
        await register_user(db_session, "seeded@example.com")  # IntegrityError, rollback()

    assert await count_users(db_session) == 1  # the seeded row survived the rollback
    await register_user(db_session, "next@example.com")  # and the session is still usable
    assert await count_users(db_session) == 2
    assert await observe("users") == 0


async def test_begin_nested_inside_a_test(db_session, observe):
    async with db_session.begin_nested():
        db_session.add(User(email="kept@example.com", name="kept"))

    nested = await db_session.begin_nested()
    db_session.add(User(email="dropped@example.com", name="dropped"))
    await db_session.flush()
    await nested.rollback()

    emails = (await db_session.scalars(select(User.email))).all()
    assert emails == ["kept@example.com"]
    assert await observe("users") == 0


async def test_two_sessions_see_each_others_commits(db_sessionmaker, observe):
    async with db_sessionmaker() as writer, db_sessionmaker() as reader:
        author = await register_user(writer, "ada@example.com")
        assert await count_users(reader) == 1

        await publish_post(reader, author.id, "Seen by the writer")
        titles = (await writer.scalars(select(Post.title))).all()
        assert titles == ["Seen by the writer"]
    assert await observe("users") == 0


async def test_expire_on_commit_is_off(db_session):
    user = await register_user(db_session, "ada@example.com")
    # With expire_on_commit=True this attribute read would need IO: MissingGreenlet.
    assert user.email == "ada@example.com"


async def test_db_connection_is_the_sessions_connection(db_connection, db_session):
    await register_user(db_session, "ada@example.com")
    assert await db_connection.scalar(select(func.count()).select_from(User)) == 1


async def test_application_code_with_its_own_engine_sees_the_database(db_engine, db_url):
    # On SQLite too: the default is one database shared by every connection of the run.
    from sqlalchemy.ext.asyncio import create_async_engine

    own_engine = create_async_engine(db_url)
    try:
        async with own_engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(User)) == 0
    finally:
        await own_engine.dispose()
