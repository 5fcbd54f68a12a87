"""What lets a browser into a private preview: a one-time token, then a signed cookie.

The dashboard (``/preview-auth``, on the control plane's own origin) mints a token for a
signed-in user who may open a port; the browser carries it to the preview host once, where
the proxy redeems it for a cookie bound to (user, sandbox, port) with an expiry. The cookie
only says who the browser is: every request checks again that this user may still open the
port (``PortService.can_open_private``), so a PATCH to the port or a removal from its
``allowedUsers`` holds on the next request.

Both live in ``cluster_keys``, the table of secrets every replica shares: the cookies'
HMAC key is one row, made by whichever replica needs it first (replicas behind one load
balancer accept each other's cookies); each token is a row of its own that redeeming
deletes, so it works once whichever replica the browser reaches. Only the SHA-256 of a
token is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from qbox.core.scopes import effective_scopes
from qbox.server.db.tables import ClusterKey, User
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext

COOKIE_KEY_ROW = "preview_cookie_key"
_TOKEN_ROW = "preview_token:"
_CACHE = "preview_cookie_key"
COOKIE_LIFETIME = timedelta(hours=1)
TOKEN_LIFETIME = timedelta(seconds=60)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:48]


@dataclass(frozen=True)
class Grant:
    """A user let into one port of one sandbox until ``expires_at`` (epoch seconds)."""

    user_id: str
    sandbox_id: str
    port: int
    expires_at: int


class PreviewGrants:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def _key(self) -> bytes:
        found = self.ctx.extras.get(_CACHE)
        if isinstance(found, bytes):
            return found
        key = await self._stored_key()
        self.ctx.extras[_CACHE] = key
        return key

    async def _stored_key(self) -> bytes:
        async with self.ctx.sessions() as session:
            row = await session.get(ClusterKey, COOKIE_KEY_ROW)
            if row is not None:
                return bytes.fromhex(row.value)
        try:
            async with self.ctx.sessions() as session:
                session.add(ClusterKey(name=COOKIE_KEY_ROW, value=secrets.token_hex(32)))
                await session.commit()
        except IntegrityError:
            pass  # another replica stored its key first: that one is the cluster's
        async with self.ctx.sessions() as session:
            row = await session.get(ClusterKey, COOKIE_KEY_ROW)
        if row is None:
            raise RuntimeError("the preview cookie key could neither be stored nor read back")
        return bytes.fromhex(row.value)

    async def cookie(self, grant: Grant) -> str:
        """The cookie value that carries ``grant``."""
        body = f"{grant.user_id}.{grant.sandbox_id}.{grant.port}.{grant.expires_at}"
        mac = hmac.new(await self._key(), body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    async def from_cookie(self, value: str | None, now: float) -> Grant | None:
        """The grant a cookie carries, if its MAC holds and it has not expired."""
        parts = (value or "").split(".")
        if len(parts) != 5 or not parts[2].isdigit() or not parts[3].isdigit() or len(parts[3]) > 12:
            return None
        body = ".".join(parts[:4])
        mac = hmac.new(await self._key(), body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, parts[4]) or int(parts[3]) <= now:
            return None
        return Grant(parts[0], parts[1], int(parts[2]), int(parts[3]))

    async def mint_token(self, user_id: str, sandbox_id: str, port: int) -> str:
        """A one-time token for ``user_id`` to open (sandbox, port), valid ``TOKEN_LIFETIME``."""
        token = secrets.token_urlsafe(32)
        now = self.ctx.clock()
        value = json.dumps({"userId": user_id, "sandboxId": sandbox_id, "port": port,
                            "expiresAt": int((now + TOKEN_LIFETIME).timestamp())})
        async with self.ctx.sessions() as session:
            # Tokens never redeemed go here, with the next one minted.
            await session.execute(delete(ClusterKey).where(
                ClusterKey.name.startswith(_TOKEN_ROW), ClusterKey.created_at < now - TOKEN_LIFETIME))
            session.add(ClusterKey(name=_TOKEN_ROW + _digest(token), value=value, created_at=now))
            await session.commit()
        return token

    async def redeem(self, token: str, now: float) -> Grant | None:
        """The grant a token was minted for, once: the row is deleted by whoever reads it."""
        if not token or len(token) > 100:
            return None
        name = _TOKEN_ROW + _digest(token)
        async with self.ctx.sessions() as session:
            value = (await session.execute(select(ClusterKey.value).where(ClusterKey.name == name))).scalar()
            if value is None:
                return None
            deleted = await session.execute(delete(ClusterKey).where(ClusterKey.name == name))
            await session.commit()
        if getattr(deleted, "rowcount", 0) != 1:
            return None  # another request redeemed it in between
        data = json.loads(value)
        if int(data["expiresAt"]) <= now:
            return None
        return Grant(str(data["userId"]), str(data["sandboxId"]), int(data["port"]), int(data["expiresAt"]))

    async def principal(self, user_id: str) -> Principal | None:
        """The user a grant names, as a principal, unless the account is gone or disabled."""
        async with self.ctx.sessions() as session:
            user = await session.get(User, user_id)
        if user is None or user.disabled_at is not None:
            return None
        return Principal(user_id=user.id, email=user.email, role=user.role, api_key_id=None,
                         scopes=("*",), effective=effective_scopes(["*"], user.role))
