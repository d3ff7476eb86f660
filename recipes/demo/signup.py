"""Signing up: a service with collaborators.

:meth:`SignupService.sign_up` is one unit of work: it adds the user and flushes (the unique
email is checked here, before anyone is told), saves the password hash with the credential
store (another service), emails a confirmation link, and commits. If any step raises,
``asyncio.CancelledError`` included (a timeout, a client that went away), it rolls the session
back and re-raises, so no half-made user is left behind; a taken email becomes
:class:`~recipes.demo.service.EmailTaken`.

The collaborators are injected. :class:`MemoryCredentialStore` and :class:`MemoryEmailSender`
keep what they are given in memory, for development, like Django's locmem email backend.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from secrets import token_urlsafe
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import User
from .service import EmailTaken

__all__ = [
    "CredentialStore",
    "EmailSender",
    "MemoryCredentialStore",
    "MemoryEmailSender",
    "PasswordHasher",
    "SignupService",
]


class CredentialStore(Protocol):
    async def save(self, user_id: int, password_hash: str) -> None: ...


class EmailSender(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class PasswordHasher:
    """PBKDF2-SHA256 with a random salt: ``hash()`` gives ``pbkdf2_sha256$iterations$salt$digest``.

    The default iteration count is OWASP's recommendation; tests may pass a small one.
    """

    def __init__(self, iterations: int = 600_000) -> None:
        self.iterations = iterations

    def hash(self, password: str) -> str:
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, self.iterations)
        return f"pbkdf2_sha256${self.iterations}${salt.hex()}${digest.hex()}"

    def verify(self, password: str, encoded: str) -> bool:
        _, iterations, salt, digest = encoded.split("$")
        salt_bytes = bytes.fromhex(salt)
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt_bytes, int(iterations))
        return hmac.compare_digest(actual.hex(), digest)


@dataclass
class MemoryCredentialStore:
    hashes: dict[int, str] = field(default_factory=dict)

    async def save(self, user_id: int, password_hash: str) -> None:
        self.hashes[user_id] = password_hash


@dataclass
class MemoryEmailSender:
    outbox: list[tuple[str, str, str]] = field(default_factory=list)

    async def send(self, to: str, subject: str, body: str) -> None:
        self.outbox.append((to, subject, body))


class SignupService:
    """Signs users up in the given session; commits on success, rolls back on any failure."""

    def __init__(
        self,
        session: AsyncSession,
        credentials: CredentialStore,
        emails: EmailSender,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.session = session
        self.credentials = credentials
        self.emails = emails
        self.hasher = hasher or PasswordHasher()

    async def sign_up(self, email: str, password: str, name: str = "") -> User:
        """Create the user, store the password hash, send the confirmation link, commit."""
        user = User(email=email, name=name or email.split("@")[0])
        self.session.add(user)
        try:
            await self.session.flush()  # a taken email fails here, before anything is sent
            await self.credentials.save(user.id, self.hasher.hash(password))
            link = f"https://example.com/confirm/{token_urlsafe(16)}"
            await self.emails.send(email, "Confirm your email", f"Confirm: {link}")
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise EmailTaken(email) from None
        except BaseException:
            # BaseException, not Exception: a cancelled signup must roll back too.
            await self.session.rollback()
            raise
        return user
