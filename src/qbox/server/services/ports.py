"""A sandbox's exposed ports (WIRE_PROTOCOL.md §4.9): expose, list, change, unexpose, mint a
signed URL, probe; and, for the preview proxy, the route of a ``(sandbox, port)``.

Every call but ``route`` is the principal's: another member's sandbox is as missing as one
that does not exist. Ports change only while their sandbox runs (unexposing: in any state);
a spawn's ports are written with its row (``services/sandboxes.py``), so they route as soon
as it runs. The rules of a port are ``port_specs``'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import (
    ConflictError,
    PortAlreadyExposedError,
    PortNotFoundError,
    QboxError,
    SandboxNotActiveError,
    SandboxNotFoundError,
)
from qbox.core.states import SandboxState
from qbox.server.db.tables import Sandbox, SandboxPort
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import lock_row
from qbox.server.services.port_specs import (
    PortChange,
    PortSpec,
    apply_change,
    check_count,
    check_port_number,
    check_spec,
    new_row,
    rotate,
)
from qbox.server.services.preview import PreviewDomain, PreviewRoute

if TYPE_CHECKING:
    from qbox.server.services.sandboxes import SandboxService


class PortService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes
        self.domain = PreviewDomain.from_settings(ctx.settings)

    # --- the preview proxy's questions (no principal) ------------------------

    async def route(self, sandbox_id: str, port: int) -> PreviewRoute | None:
        """Where a preview of ``(sandbox, port)`` goes; None when the port is not exposed."""
        query = (select(SandboxPort, Sandbox.owner_id, Sandbox.host_id, Sandbox.status)
                 .join(Sandbox, Sandbox.id == SandboxPort.sandbox_id)
                 .where(SandboxPort.sandbox_id == sandbox_id, SandboxPort.port == port))
        async with self.ctx.sessions() as session:
            found = (await session.execute(query)).first()
        if found is None:
            return None
        row, owner_id, host_id, status = found
        return PreviewRoute(sandbox_id=sandbox_id, port=port, owner_id=owner_id, host_id=host_id,
                            sandbox_status=status, visibility=row.visibility,
                            host_header_mode=row.host_header_mode,
                            allowed_users=tuple(row.allowed_users or ()), signing_key=row.signing_key)

    async def can_open_private(self, route: PreviewRoute, principal: Principal) -> bool:
        """The sandbox's owner, an admin, or a user the port names (by id or email)."""
        if principal.is_admin or principal.user_id == route.owner_id:
            return True
        return principal.user_id in route.allowed_users or principal.email.lower() in route.allowed_users

    # --- the owner's calls ---------------------------------------------------

    async def list(self, principal: Principal, sandbox_id: str) -> list[SandboxPort]:
        async with self.ctx.sessions() as session:
            await _sandbox(session, principal, sandbox_id)
            query = select(SandboxPort).where(SandboxPort.sandbox_id == sandbox_id).order_by(SandboxPort.port)
            return list((await session.execute(query)).scalars().all())

    async def get(self, principal: Principal, sandbox_id: str, port: int) -> SandboxPort:
        async with self.ctx.sessions() as session:
            await _sandbox(session, principal, sandbox_id)
            return await _port(session, sandbox_id, port)

    async def expose(self, principal: Principal, sandbox_id: str, spec: PortSpec) -> SandboxPort:
        spec = check_spec(spec, self.ctx.settings)
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            # The sandbox's row is locked: two exposes cannot both take the last free place.
            _running(await _sandbox(session, principal, sandbox_id, lock=True))
            if await session.get(SandboxPort, (sandbox_id, spec.port)) is not None:
                raise _already(sandbox_id, spec.port)
            count = await session.scalar(select(func.count()).select_from(SandboxPort)
                                         .where(SandboxPort.sandbox_id == sandbox_id))
            check_count((count or 0) + 1, self.ctx.settings)
            row = new_row(sandbox_id, spec, self.ctx.settings, now)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise _already(sandbox_id, spec.port) from None
            return row

    async def update(self, principal: Principal, sandbox_id: str, port: int, change: PortChange) -> SandboxPort:
        async with self.ctx.sessions() as session:
            _running(await _sandbox(session, principal, sandbox_id, lock=True))
            row = await _port(session, sandbox_id, port)
            apply_change(row, change, self.ctx.settings, self.ctx.clock())
            await session.commit()
            return row

    async def unexpose(self, principal: Principal, sandbox_id: str, port: int) -> None:
        async with self.ctx.sessions() as session:
            await _sandbox(session, principal, sandbox_id, lock=True)
            await session.delete(await _port(session, sandbox_id, port))
            await session.commit()

    async def mint_signed_url(self, principal: Principal, sandbox_id: str, port: int,
                              ttl_seconds: int | None) -> SandboxPort:
        """A new signed URL for a signed_url port; every URL minted before it stops working."""
        async with self.ctx.sessions() as session:
            _running(await _sandbox(session, principal, sandbox_id, lock=True))
            row = await _port(session, sandbox_id, port)
            if row.visibility != "signed_url":
                raise ConflictError(
                    f"port {port} is {row.visibility}: make it signed_url first (PATCH visibility)",
                    details={"port": port, "visibility": row.visibility})
            rotate(row, ttl_seconds, self.ctx.settings, self.ctx.clock())
            await session.commit()
            return row

    async def probe(self, principal: Principal, sandbox_id: str, port: int) -> bool:
        """Whether something accepts connections on the exposed port inside the running sandbox.
        A host that cannot be reached, or any refusal of its agent, is "not reachable"."""
        await self.get(principal, sandbox_id, port)
        try:
            return await self.sandboxes.relay(principal, sandbox_id,
                                              lambda agent: agent.ports.probe(sandbox_id, port))
        except (SandboxNotFoundError, SandboxNotActiveError):
            raise
        except QboxError:
            return False


async def _sandbox(session: AsyncSession, principal: Principal, sandbox_id: str, *, lock: bool = False) -> Sandbox:
    """The principal's sandbox; with ``lock``, its row held until the transaction ends, so two
    changes of its ports do not interleave (a no-op UPDATE: a write lock on SQLite too)."""
    if lock:
        await lock_row(session, sandbox_id)
    sandbox = (await session.execute(select(Sandbox).where(Sandbox.id == sandbox_id))).scalar_one_or_none()
    # Another user's sandbox is indistinguishable from a missing one.
    if sandbox is None or (not principal.is_admin and sandbox.owner_id != principal.user_id):
        raise SandboxNotFoundError(f"sandbox {sandbox_id} not found", details={"sandboxId": sandbox_id})
    return sandbox


def _running(sandbox: Sandbox) -> None:
    if sandbox.status != SandboxState.RUNNING:
        raise SandboxNotActiveError(f"sandbox {sandbox.id} is {sandbox.status}, not running",
                                    details={"sandboxId": sandbox.id, "currentState": sandbox.status})


async def _port(session: AsyncSession, sandbox_id: str, port: int) -> SandboxPort:
    row = await session.get(SandboxPort, (sandbox_id, check_port_number(port)))
    if row is None:
        raise PortNotFoundError(f"port {port} of sandbox {sandbox_id} is not exposed",
                                details={"sandboxId": sandbox_id, "port": port})
    return row


def _already(sandbox_id: str, port: int) -> PortAlreadyExposedError:
    return PortAlreadyExposedError(f"port {port} of sandbox {sandbox_id} is already exposed: change it with PATCH",
                                   details={"sandboxId": sandbox_id, "port": port})
