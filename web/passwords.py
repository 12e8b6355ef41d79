"""Password hashing for the web sign-in: argon2id (argon2-cffi), off the event loop.

Why a thread: one argon2id verification with the library's default cost (64 MiB, 3 passes) takes tens of
milliseconds of CPU; run inline it would stall every call event the service is handling meanwhile.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
MIN_LENGTH = 10
MAX_LENGTH = 256
#: A hash of a random password, verified when the user does not exist so both cases take the same time.
_DUMMY = _hasher.hash("not a password anyone has, used to even out timing")


class WeakPassword(ValueError):
    """The password does not meet the rules (length); the message says which."""


def check_strength(password: str) -> None:
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"password: {MIN_LENGTH} to {MAX_LENGTH} characters")
    if password.strip() != password or len(set(password)) < 4:
        raise WeakPassword("password: no leading/trailing spaces, at least 4 different characters")


async def hash_password(password: str) -> str:
    check_strength(password)
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored`; False (after the same work) when there is no stored hash."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    return await asyncio.to_thread(_verify, stored, password)
