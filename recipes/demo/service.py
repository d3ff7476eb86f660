"""The demo service layer: it commits, as production code does, and speaks in domain errors.

Every function takes the ``AsyncSession`` it works in, commits its own unit of work, and turns
the database's refusal (an IntegrityError; on MySQL and MariaDB a CHECK violation is an
OperationalError: :func:`_refused`) into a :class:`DomainError` after rolling the session back,
so the caller's session stays usable.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Post, User

__all__ = [
    "DomainError",
    "EmailTaken",
    "InvalidPost",
    "count_users",
    "like_post",
    "publish_post",
    "register_user",
]


# MySQL's and MariaDB's error codes for a CHECK constraint violated, which their drivers raise
# as OperationalError (the class of a lost connection, too), not IntegrityError
_CHECK_VIOLATED = {3819, 4025}


def _refused(error: DBAPIError) -> bool:
    """Whether the database refused the data for a constraint (not, say, the connection lost)."""
    if isinstance(error, IntegrityError):
        return True
    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
    return isinstance(error, OperationalError) and code in _CHECK_VIOLATED


class DomainError(Exception):
    """A request the domain refuses; the session was rolled back and is usable."""


class EmailTaken(DomainError):
    def __init__(self, email: str) -> None:
        super().__init__(f"email already registered: {email}")
        self.email = email


class InvalidPost(DomainError):
    """The post breaks a rule the database enforces (unknown author, missing title, ...)."""


async def register_user(session: AsyncSession, email: str, name: str = "") -> User:
    """Create a user and commit; raise :class:`EmailTaken` if the email is registered."""
    user = User(email=email, name=name or email.split("@")[0])
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise EmailTaken(email) from None
    return user


async def publish_post(session: AsyncSession, author_id: int, title: str, body: str = "") -> Post:
    """Create a post and commit; raise :class:`InvalidPost` when a constraint refuses it."""
    post = Post(author_id=author_id, title=title, body=body)
    session.add(post)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise InvalidPost(str(exc.orig)) from None
    return post


async def like_post(session: AsyncSession, post_id: int, delta: int = 1) -> int:
    """Add ``delta`` likes to a post and commit; the CHECK constraint refuses a negative total."""
    post = await session.get_one(Post, post_id)
    post.likes += delta
    try:
        await session.commit()
    except DBAPIError as exc:
        if not _refused(exc):
            raise
        await session.rollback()
        raise InvalidPost(str(exc.orig)) from None
    return post.likes


async def count_users(session: AsyncSession) -> int:
    """How many users exist, as the session sees them."""
    return await session.scalar(select(func.count()).select_from(User)) or 0
