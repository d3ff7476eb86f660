"""recipes.demo.signup on the real database: commit on success, rollback on any failure."""

import asyncio
from unittest.mock import AsyncMock

import pytest
from sqlalchemy import select

from recipes.demo.models import User
from recipes.demo.service import EmailTaken, count_users, register_user
from recipes.demo.signup import (
    MemoryCredentialStore,
    MemoryEmailSender,
    PasswordHasher,
    SignupService,
)

FAST = PasswordHasher(iterations=1_000)


@pytest.fixture
def credentials():
    return MemoryCredentialStore()


@pytest.fixture
def emails():
    return MemoryEmailSender()


@pytest.fixture
def service(db_session, credentials, emails):
    return SignupService(db_session, credentials, emails, hasher=FAST)


@pytest.mark.asyncio
async def test_sign_up_commits_the_user_stores_the_hash_and_emails_a_link(
    db_session, db_sessionmaker, service, credentials, emails
):
    user = await service.sign_up("ada@example.com", "s3cret")

    assert user.id is not None and user.name == "ada"
    async with db_sessionmaker() as other:  # another session sees the commit
        assert await other.scalar(select(User.email).where(User.id == user.id)) == "ada@example.com"
    assert FAST.verify("s3cret", credentials.hashes[user.id])
    [(to, subject, body)] = emails.outbox
    assert (to, subject) == ("ada@example.com", "Confirm your email") and "/confirm/" in body


@pytest.mark.asyncio
async def test_a_taken_email_raises_and_tells_no_one(db_session, service, credentials, emails):
    await register_user(db_session, "ada@example.com")

    with pytest.raises(EmailTaken):
        await service.sign_up("ada@example.com", "s3cret")

    assert credentials.hashes == {} and emails.outbox == []
    assert await count_users(db_session) == 1  # the session is usable after the rollback


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("mail server down"), asyncio.CancelledError()],
    ids=["error", "cancelled"],
)
@pytest.mark.asyncio
async def test_a_failing_collaborator_leaves_no_user(db_session, credentials, failure):
    emails = AsyncMock(spec=MemoryEmailSender)
    emails.send.side_effect = failure
    service = SignupService(db_session, credentials, emails, hasher=FAST)

    with pytest.raises(type(failure)):
        await service.sign_up("ada@example.com", "s3cret")

    assert await count_users(db_session) == 0


@pytest.mark.asyncio
async def test_a_timed_out_signup_rolls_back(db_session, emails):
    async def slow_save(user_id: int, password_hash: str) -> None:
        await asyncio.sleep(10)

    credentials = AsyncMock(spec=MemoryCredentialStore)
    credentials.save.side_effect = slow_save
    service = SignupService(db_session, credentials, emails, hasher=FAST)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await service.sign_up("ada@example.com", "s3cret")

    assert emails.outbox == []
    assert await count_users(db_session) == 0


def test_the_hasher_salts_and_verifies():
    first, second = FAST.hash("s3cret"), FAST.hash("s3cret")
    assert first != second
    assert FAST.verify("s3cret", first) and not FAST.verify("wrong", first)
    assert PasswordHasher().iterations == 600_000
