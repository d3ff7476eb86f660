"""Typed SQLAlchemy 2.x models of the demo domain: users and the posts they write.

The constraints are the point: a unique, length-limited email; a post's author is a foreign
key; a post's title may not be null; a post's like count may not be negative (CHECK). An admin
is a user with ``is_admin`` set.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, false
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Post", "User", "EMAIL_MAX_LENGTH", "TITLE_MAX_LENGTH"]

EMAIL_MAX_LENGTH = 64
TITLE_MAX_LENGTH = 120


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base of the demo domain; ``Base.metadata`` holds every table. ``AsyncAttrs``
    gives every model ``awaitable_attrs``: ``await user.awaitable_attrs.posts``."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    # server_default too: rows inserted with plain SQL (fixtures, migrations) are not admins
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    posts: Mapped[list[Post]] = relationship(back_populates="author", cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, email={self.email!r})"


class Post(Base):
    __tablename__ = "posts"
    __table_args__ = (CheckConstraint("likes >= 0", name="ck_posts_likes_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    body: Mapped[str] = mapped_column(Text, default="")
    likes: Mapped[int] = mapped_column(default=0)
    author: Mapped[User] = relationship(back_populates="posts")

    def __repr__(self) -> str:
        return f"Post(id={self.id!r}, title={self.title!r})"
