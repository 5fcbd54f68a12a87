"""API keys: minting, hashing and looking up by secret.

A secret is ``qbox_`` + 43 url-safe characters (32 random bytes). Only its
SHA-256 is stored, plus a short display prefix; the secret itself is shown
once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.ids import new_id
from qbox.core.timefmt import utcnow
from qbox.server.db.tables import ApiKey, User

SECRET_PREFIX = "qbox_"
_DISPLAY_PREFIX_LEN = len(SECRET_PREFIX) + 8
# last_used_at is informational; writing it on every request would make every
# read a write. A minute of precision is plenty.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind the key and what the key may do."""

    user_id: str
    email: str
    role: str
    api_key_id: str
    scopes: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def create_key(
    session: AsyncSession,
    *,
    user_id: str,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    secret = mint_secret()
    key = ApiKey(
        id=new_id("key", 16),
        user_id=user_id,
        name=name,
        prefix=secret[:_DISPLAY_PREFIX_LEN],
        secret_hash=hash_secret(secret),
        scopes=list(scopes),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def principal_for_secret(session: AsyncSession, secret: str) -> Principal | None:
    """The principal for a presented secret, or None if unknown, revoked or expired."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    digest = hash_secret(secret)
    row = (
        await session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(
                ApiKey.secret_hash == digest
            )
        )
    ).first()
    if row is None:
        return None
    key, user = row
    # The lookup is by hash already; compare again in constant time so the
    # decision never depends on a short-circuiting string compare.
    if not hmac.compare_digest(key.secret_hash, digest):
        return None
    now = utcnow()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        await session.commit()
    return Principal(
        user_id=user.id,
        email=user.email,
        role=user.role,
        api_key_id=key.id,
        scopes=tuple(key.scopes),
    )
