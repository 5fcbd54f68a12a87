"""Dashboard sessions: an HttpOnly cookie naming a server-side session, plus its CSRF token.

Only the SHA-256 of the cookie value is stored. Every state-changing request
authenticated by the cookie must echo the session's CSRF token (header
``X-CSRF-Token`` or form field ``csrf_token``), which a cross-site page
cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from qbox.core.scopes import effective_scopes
from qbox.server.db.tables import User, WebSession
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal

SESSION_COOKIE = "qbox_session"
CSRF_COOKIE = "qbox_csrf"
SESSION_LIFETIME = timedelta(hours=12)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class SessionPrincipal:
    principal: Principal
    csrf_token: str

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token, presented or "")


class WebSessionService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def open(self, user: User) -> tuple[str, str]:
        """A new session for ``user``: (cookie value, CSRF token)."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            session.add(WebSession(id_hash=_digest(cookie), user_id=user.id, csrf_token=csrf,
                                   created_at=now, expires_at=now + SESSION_LIFETIME))
            await session.commit()
        return cookie, csrf

    async def resolve(self, cookie: str | None) -> SessionPrincipal | None:
        if not cookie:
            return None
        async with self.ctx.sessions() as session:
            row = (await session.execute(
                select(WebSession, User).join(User, User.id == WebSession.user_id)
                .where(WebSession.id_hash == _digest(cookie)))).first()
        if row is None:
            return None
        web, user = row
        if web.revoked_at is not None or web.expires_at <= self.ctx.clock() or user.disabled_at is not None:
            return None
        principal = Principal(user_id=user.id, email=user.email, role=user.role, api_key_id=None,
                              scopes=("*",), effective=effective_scopes(["*"], user.role))
        return SessionPrincipal(principal, web.csrf_token)

    async def close(self, cookie: str) -> None:
        async with self.ctx.sessions() as session:
            await session.execute(update(WebSession).where(WebSession.id_hash == _digest(cookie))
                                  .values(revoked_at=self.ctx.clock()))
            await session.commit()
