"""``sandbox.ports`` for ``AsyncSandbox``: the same surface as ``_ports``, awaited."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from qbox.sdk import _port_ops as ops
from qbox.sdk._port_ops import Port
from qbox.sdk._transport import AsyncConnection


class AsyncPorts:
    """The exposed ports of one sandbox. A preview URL reaches whatever listens on the port
    inside the sandbox: ``public`` for anyone, ``private`` for the owner, admins and
    ``allowed_users`` (ids or emails), ``signed_url`` for whoever holds a signed, expiring link."""

    def __init__(self, connection: AsyncConnection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    async def expose(
        self,
        port: int,
        *,
        visibility: str = "public",
        allowed_users: Sequence[str] | None = None,
        host_header_mode: str = "rewrite",
        ttl: int | None = None,
        force: bool = False,
    ) -> str:
        """Expose ``port`` and return its URL (for ``signed_url``, the signed link valid ``ttl``
        seconds). ``host_header_mode="preserve"`` passes the preview host to the app instead of
        ``localhost:{port}``; ``force`` allows a port under 1024."""
        body = ops.expose_body(port, visibility=visibility, allowed_users=allowed_users,
                               host_header_mode=host_header_mode, ttl=ttl, force=force)
        exposed = await self._conn.run(ops.expose(self._conn.api, self._sandbox_id, body))
        return exposed.signed_url or exposed.url

    async def expose_and_wait(
        self,
        port: int,
        *,
        timeout: float = 30.0,
        visibility: str = "public",
        allowed_users: Sequence[str] | None = None,
        host_header_mode: str = "rewrite",
        ttl: int | None = None,
        force: bool = False,
    ) -> str:
        """``expose``, then wait until something listens on the port (probed every 0.5 s);
        ``PortNotReachableError`` after ``timeout`` seconds (the port stays exposed)."""
        body = ops.expose_body(port, visibility=visibility, allowed_users=allowed_users,
                               host_header_mode=host_header_mode, ttl=ttl, force=force)
        return await self._conn.run(ops.expose_and_wait(self._conn.api, self._sandbox_id, body, timeout))

    async def mint_signed_url(self, port: int, *, ttl: int | None = None) -> str:
        """A new signed link for a signed_url port; every link minted before it stops working."""
        minted = await self._conn.run(ops.mint_signed_url(self._conn.api, self._sandbox_id, port, ttl))
        return minted.signed_url or minted.url

    async def list(self) -> builtins.list[Port]:
        return await self._conn.run(ops.list_ports(self._conn.api, self._sandbox_id))

    async def get(self, port: int) -> Port:
        return await self._conn.run(ops.get(self._conn.api, self._sandbox_id, port))

    async def update(
        self,
        port: int,
        *,
        visibility: str | None = None,
        allowed_users: Sequence[str] | None = None,
        host_header_mode: str | None = None,
    ) -> Port:
        """Change what is given; the rest stays. Becoming ``signed_url`` mints a link."""
        return await self._conn.run(ops.update(self._conn.api, self._sandbox_id, port, visibility=visibility,
                                         allowed_users=allowed_users, host_header_mode=host_header_mode))

    async def unexpose(self, port: int) -> None:
        await self._conn.run(ops.unexpose(self._conn.api, self._sandbox_id, port))

    async def probe(self, port: int) -> bool:
        """Whether something accepts connections on the exposed port inside the sandbox."""
        return await self._conn.run(ops.probe(self._conn.api, self._sandbox_id, port))

    def __repr__(self) -> str:
        return f"AsyncPorts(sandbox_id={self._sandbox_id!r})"
