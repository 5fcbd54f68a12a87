"""API keys: minting, hashing, looking up by secret, listing and revoking.

A secret is ``qbox_`` + 43 url-safe characters (32 random bytes). Only its
SHA-256 is stored, plus a short display prefix; the secret itself is shown
once, when it is created. Every request looks its key up in the database,
so a revocation holds on the very next request on every replica.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import NotFoundError, PermissionDeniedError, ValidationError
from qbox.core.ids import new_id
from qbox.core.scopes import WILDCARD, effective_scopes, unknown_scopes
from qbox.core.timefmt import utcnow
from qbox.server.db.tables import ApiKey, User
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.shells import ShellService

SECRET_PREFIX = "qbox_"
_DISPLAY_PREFIX_LEN = len(SECRET_PREFIX) + 8
# last_used_at is informational; writing it on every request would make every
# read a write. A minute of precision is plenty.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def key_status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


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
    """The principal for a presented secret, or None if unknown, revoked, expired or disabled."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    digest = hash_secret(secret)
    row = (
        await session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.secret_hash == digest)
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
    if key_status(key, now) != "active" or user.disabled_at is not None:
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
        effective=effective_scopes(key.scopes, user.role),
    )


class KeyService:
    def __init__(self, ctx: ServiceContext, shells: ShellService) -> None:
        self.ctx = ctx
        self.shells = shells

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        user_id: str | None = None,
    ) -> tuple[ApiKey, User, str]:
        owner_id = user_id or principal.user_id
        if owner_id != principal.user_id and not principal.is_admin:
            raise ValidationError.for_fields({"userId": "only admins create keys for other users"})
        if unknown := unknown_scopes(scopes):
            raise ValidationError.for_fields({"scopes": f"unknown scopes: {', '.join(unknown)}"})
        if expires_at is not None and expires_at <= self.ctx.clock():
            raise ValidationError.for_fields({"expiresAt": "must be in the future"})
        async with self.ctx.sessions() as session:
            owner = await session.get(User, owner_id)
            if owner is None or owner.disabled_at is not None:
                raise ValidationError.for_fields({"userId": "no such active user"})
            # A key never holds more than its user may do, nor more than the key creating it.
            allowed = effective_scopes([WILDCARD], owner.role) & principal.effective
            wanted = allowed if WILDCARD in scopes else frozenset(scopes)
            if not wanted <= allowed:
                beyond = sorted(wanted - allowed)
                raise PermissionDeniedError(
                    f"cannot grant scopes beyond your own or the user's role: {', '.join(beyond)}",
                    details={"requiredScope": beyond[0], "grantedScopes": sorted(allowed)},
                )
            key, secret = await create_key(session, user_id=owner.id, name=name, scopes=scopes,
                                           expires_at=expires_at)
            await session.commit()
            return key, owner, secret

    async def find(self, principal: Principal, user_id: str | None = None) -> list[tuple[ApiKey, User]]:
        query = select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.created_at.desc())
        if not principal.is_admin:
            query = query.where(ApiKey.user_id == principal.user_id)
        elif user_id:
            query = query.where(ApiKey.user_id == user_id)
        async with self.ctx.sessions() as session:
            return [(row[0], row[1]) for row in (await session.execute(query)).all()]

    async def get(self, principal: Principal, key_id: str) -> tuple[ApiKey, User]:
        async with self.ctx.sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.id == key_id)
                )
            ).first()
        # Another user's key is indistinguishable from a missing one.
        if row is None or (not principal.is_admin and row[0].user_id != principal.user_id):
            raise NotFoundError(f"api key {key_id} not found", details={"apiKeyId": key_id})
        return row[0], row[1]

    async def revoke(self, principal: Principal, key_id: str) -> tuple[ApiKey, User]:
        key, owner = await self.get(principal, key_id)
        if key.revoked_at is None:
            async with self.ctx.sessions() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=self.ctx.clock())
                )
                await session.commit()
        self.shells.close_for_key(key_id)
        return await self.get(principal, key_id)
