"""Hosts joining and staying: join tokens, the one-time join, and heartbeats.

An admin makes a join token (``qbox hosts token create``); an agent started
with ``qbox agent --join URL --token T`` exchanges it once for its host id,
its host credential and the agent secret the control planes will present to
it (services/host_credentials.py). Every heartbeat then says what the host
has and uses, and is answered with the deadlines of its live sandboxes so
the agent can enforce them while no control plane answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update

from qbox.core.errors import (
    InvalidHostCredentialError,
    InvalidJoinTokenError,
    NotFoundError,
    ValidationError,
)
from qbox.core.ids import new_id
from qbox.core.states import LIVE_STATES
from qbox.protocol.host import HeartbeatReply, HostReport, JoinReply, JoinRequest
from qbox.server.db.tables import Host, HostPlacement, JoinToken, Sandbox
from qbox.server.principal import Principal
from qbox.server.services.cluster_ca import ensure_ca, sign_csr
from qbox.server.services.context import ServiceContext
from qbox.server.services.host_credentials import (
    CREDENTIAL_PREFIX,
    JOIN_TOKEN_PREFIX,
    AgentSecrets,
    hash_secret,
    mint,
)
from qbox.server.services.hosts import JOINED, READY, record_report
from qbox.server.services.lifecycle import values_of

log = logging.getLogger("qbox.hosts")

def token_status(token: JoinToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.used_at is not None:
        return "used"
    if token.expires_at <= now:
        return "expired"
    return "active"


def new_host_id() -> str:
    return new_id("host", 12)


def check_address(address: str) -> str:
    """The agent's advertised address: an http(s) URL with a host and a port."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValidationError.for_fields(
            {"report.address": "must be http(s)://HOST:PORT, the agent's --listen or --advertise address"})
    return f"{parts.scheme}://{parts.netloc}"


class HostJoins:
    def __init__(self, ctx: ServiceContext, secrets: AgentSecrets,
                 builtins: Callable[[str, str, str], Awaitable[None]] | None = None) -> None:
        self.ctx = ctx
        self.secrets = secrets
        # ensure_fleet_builtin(name, image ref, host id): a host offering a built-in's image.
        self.builtins = builtins

    # --- tokens (admins) ------------------------------------------------------

    async def create_token(self, principal: Principal, ttl_seconds: int | None,
                           labels: Mapping[str, str]) -> tuple[JoinToken, str]:
        secret = mint(JOIN_TOKEN_PREFIX)
        now = self.ctx.clock()
        ttl = ttl_seconds or self.ctx.settings.join_token_ttl_seconds
        token = JoinToken(id=new_id("jt", 16), secret_hash=hash_secret(secret),
                          created_by=principal.user_id, created_at=now,
                          expires_at=now + timedelta(seconds=ttl), labels=dict(labels))
        async with self.ctx.sessions() as session:
            session.add(token)
            await session.commit()
        return token, secret

    async def tokens(self) -> list[JoinToken]:
        async with self.ctx.sessions() as session:
            return list((await session.execute(
                select(JoinToken).order_by(JoinToken.created_at.desc(), JoinToken.id))).scalars())

    async def revoke_token(self, token_id: str) -> None:
        async with self.ctx.sessions() as session:
            token = await session.get(JoinToken, token_id)
            if token is None:
                raise NotFoundError(f"join token {token_id} not found", details={"tokenId": token_id})
            if token.revoked_at is None:
                token.revoked_at = self.ctx.clock()
            await session.commit()

    # --- agents -----------------------------------------------------------------

    async def join(self, host_id: str, request: JoinRequest) -> JoinReply:
        """Exchange a join token, once, for a host: its id, credential and agent secret."""
        address = check_address(request.report.address)
        ca_pem = certificate = None
        if request.csr_pem:
            # Before the token is spent: a request the CA refuses leaves the token usable.
            ca = await ensure_ca(self.ctx)
            certificate, ca_pem = sign_csr(ca, request.csr_pem, host_id), ca.cert_pem
        now = self.ctx.clock()
        credential = mint(CREDENTIAL_PREFIX)
        async with self.ctx.sessions() as session:
            # One conditional UPDATE: of two agents racing with one token, one wins.
            used = await session.execute(
                update(JoinToken)
                .where(JoinToken.secret_hash == hash_secret(request.token),
                       JoinToken.used_at.is_(None), JoinToken.revoked_at.is_(None),
                       JoinToken.expires_at > now)
                .values(used_at=now, host_id=host_id)
                .returning(JoinToken.labels))
            labels = used.scalar_one_or_none()
            if labels is None:
                raise InvalidJoinTokenError("the join token is unknown, already used, expired or revoked")
            host = Host(id=host_id, hostname=request.report.hostname or host_id, address=address,
                        status=READY, kind=JOINED, credential_hash=hash_secret(credential),
                        labels=dict(labels), created_at=now, last_seen_at=now)
            record_report(host, request.report)
            session.add(host)
            session.add(HostPlacement(host_id=host_id, placed=0))
            await session.commit()
        agent_secret = await self.secrets.for_host(host_id)
        await self.ctx.agents.connect(host_id, address, agent_secret)
        self.ctx.agents.liveness[host_id] = READY
        log.info("host %s (%s) joined from %s", host_id, host.hostname, address)
        await self._offer_builtins(host_id, request.report)
        settings = self.ctx.settings
        return JoinReply(host_id=host_id, credential=credential, agent_secret=agent_secret,
                         heartbeat_seconds=settings.host_heartbeat_seconds,
                         fence_seconds=settings.fence_seconds,
                         ca_cert_pem=ca_pem, certificate_pem=certificate)

    async def _offer_builtins(self, host_id: str, report: HostReport) -> None:
        if self.builtins is None:
            return
        for name, ref in sorted(report.builtin_images.items()):
            await self.builtins(name, ref, host_id)

    async def heartbeat(self, credential: str, report: HostReport) -> HeartbeatReply:
        """Record a joined host's report; a host that was unhealthy or down is ready again."""
        address = check_address(report.address)
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            host = (await session.execute(select(Host).where(
                Host.credential_hash == hash_secret(credential), Host.removed_at.is_(None))
            )).scalar_one_or_none()
            if host is None:
                raise InvalidHostCredentialError("this host's credential is unknown or was revoked "
                                                 "(the host was removed): join it again")
            came_back = host.status != READY
            if came_back:
                log.warning("host %s is answering again (it was %s)", host.id, host.status)
            record_report(host, report)
            host.address = address
            host.last_seen_at = now
            host.status = READY
            rows = (await session.execute(select(Sandbox.id, Sandbox.deadline_at).where(
                Sandbox.host_id == host.id, Sandbox.status.in_(values_of(LIVE_STATES))))).all()
            deadlines = {sandbox_id: deadline for sandbox_id, deadline in rows}
            await session.commit()
        await self.ctx.agents.connect(host.id, address, await self.secrets.for_host(host.id))
        self.ctx.agents.liveness[host.id] = READY
        await self._offer_builtins(host.id, report)
        if came_back:
            # Containers it still holds of sandboxes ended meanwhile go at the next host sync.
            self.ctx.agents.to_sweep.add(host.id)
        settings = self.ctx.settings
        return HeartbeatReply(host_id=host.id, status="draining" if host.draining else READY,
                              heartbeat_seconds=settings.host_heartbeat_seconds,
                              fence_seconds=settings.fence_seconds, deadlines=deadlines)

