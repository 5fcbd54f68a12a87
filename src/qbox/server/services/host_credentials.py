"""The secrets between control planes and the hosts that joined them.

Three kinds, each one way:

- a **join token** (``qbj_…``), made by an admin, exchanged once by an agent;
- the **host credential** (``qbh_…``) the agent presents on every heartbeat;
- the **agent secret** the control plane presents on every data-plane call.

The control plane keeps only SHA-256 hashes of the first two. The third is
not stored at all: it is derived per host from the cluster key (a random
key in ``cluster_keys`` that the first replica makes), so every replica can
call every agent, and a host's secret says nothing of another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy.exc import IntegrityError

from qbox.server.db.tables import ClusterKey
from qbox.server.services.context import ServiceContext

JOIN_TOKEN_PREFIX = "qbj_"
CREDENTIAL_PREFIX = "qbh_"
AGENT_SECRET_KEY = "agent_secret_key"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


async def cluster_key(ctx: ServiceContext, name: str, make: str) -> str:
    """The cluster key ``name``, stored as ``make`` if no replica stored one before."""
    async with ctx.sessions() as session:
        row = await session.get(ClusterKey, name)
        if row is not None:
            return row.value
        session.add(ClusterKey(name=name, value=make, created_at=ctx.clock()))
        try:
            await session.commit()
            return make
        except IntegrityError:  # another replica made it first: theirs is the key
            await session.rollback()
    async with ctx.sessions() as session:
        row = await session.get(ClusterKey, name)
        assert row is not None
        return row.value


class AgentSecrets:
    """Derives each joined host's agent secret from the cluster key (read once, at first use)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._key: bytes | None = None

    async def for_host(self, host_id: str) -> str:
        if self._key is None:
            self._key = (await cluster_key(self.ctx, AGENT_SECRET_KEY, secrets.token_urlsafe(32))).encode()
        digest = hmac.new(self._key, f"agent-secret:{host_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
