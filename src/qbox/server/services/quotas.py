"""Per-user quotas: limits (setting -> admin default -> user override), usage, and the checks.

Six quotas: live sandboxes, and the vCPUs, memory and disk they reserve
(counted in the database, so they hold across replicas, and checked in the
spawn's admission transaction), concurrent commands (in-flight ``/exec``
calls plus running background commands) and open shells (counted per
replica: ``slots.py``). Admins are exempt: they set the quotas, and an
operator's automation should not be stopped by a default meant for members;
their usage is still reported. Over a quota is ``quota_exceeded`` (429) with
details ``{quota, limit, used, requested}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import NotFoundError, QboxError, SandboxNotFoundError, ValidationError
from qbox.core.states import LIVE_STATES, SandboxState
from qbox.server.db.tables import QuotaColumns, QuotaDefaults, Sandbox, User, UserQuota
from qbox.server.services.admission import Resources
from qbox.server.services.context import ServiceContext
from qbox.server.services.lifecycle import values_of
from qbox.server.principal import Principal
from qbox.server.services.slots import CommandSlot, CommandSlots, ShellSlots, Slot, exceeded
from qbox.server.settings import ServerSettings

# Wire name -> column (of QuotaColumns) and setting (of ServerSettings, "quota_" + column).
QUOTAS: dict[str, str] = {"sandboxes": "sandboxes", "vcpus": "vcpus", "memoryMb": "memory_mb",
                          "diskMb": "disk_mb", "commands": "commands", "shells": "shells"}
DEFAULTS_ROW = 1
# Larger than any real limit, small enough for a 32-bit column.
MAX_LIMIT = 2**31 - 1

Limits = dict[str, int]
Changes = Mapping[str, int | None]


def setting_defaults(settings: ServerSettings) -> Limits:
    return {name: int(getattr(settings, "quota_" + column)) for name, column in QUOTAS.items()}


def stored(row: QuotaColumns | None) -> dict[str, int | None]:
    return {name: (getattr(row, column) if row is not None else None) for name, column in QUOTAS.items()}


def check_changes(changes: Changes) -> None:
    fields = {name: "unknown quota" for name in changes if name not in QUOTAS}
    for name, value in changes.items():
        if name in QUOTAS and value is not None and (type(value) is not int or not 0 <= value <= MAX_LIMIT):
            fields[name] = f"must be a whole number from 0 to {MAX_LIMIT}, or null for the default"
    if fields:
        raise ValidationError.for_fields(fields)


def _apply(row: QuotaColumns, changes: Changes) -> None:
    for name, value in changes.items():
        setattr(row, QUOTAS[name], value)


@dataclass(frozen=True)
class QuotaReport:
    """A user's limits (None: exempt), their own overrides, and what they use now."""

    user_id: str
    exempt: bool
    limits: dict[str, int | None]
    overrides: dict[str, int | None]
    usage: Limits

    def wire(self) -> dict[str, Any]:
        return {"userId": self.user_id, "exempt": self.exempt, "limits": self.limits,
                "overrides": self.overrides, "usage": self.usage}


class QuotaService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.commands = CommandSlots(self._still_running)
        self.shells = ShellSlots()

    # --- limits ---------------------------------------------------------------

    async def defaults(self) -> tuple[Limits, dict[str, int | None]]:
        """The defaults in force, and what admins stored over the settings (None: the setting)."""
        async with self.ctx.sessions() as session:
            row = await session.get(QuotaDefaults, DEFAULTS_ROW)
        return self._merge(setting_defaults(self.ctx.settings), stored(row)), stored(row)

    async def set_defaults(self, changes: Changes) -> tuple[Limits, dict[str, int | None]]:
        check_changes(changes)
        async with self.ctx.sessions() as session:
            row = await session.get(QuotaDefaults, DEFAULTS_ROW)
            if row is None:
                row = QuotaDefaults(id=DEFAULTS_ROW)
                session.add(row)
            _apply(row, changes)
            row.updated_at = self.ctx.clock()
            await session.commit()
        return await self.defaults()

    async def limits_in(self, session: AsyncSession, user_id: str) -> Limits:
        defaults = await session.get(QuotaDefaults, DEFAULTS_ROW)
        overrides = await session.get(UserQuota, user_id)
        merged = self._merge(setting_defaults(self.ctx.settings), stored(defaults))
        return self._merge(merged, stored(overrides))

    async def limit(self, principal: Principal, quota: str) -> int | None:
        if principal.is_admin:
            return None
        async with self.ctx.sessions() as session:
            return (await self.limits_in(session, principal.user_id))[quota]

    @staticmethod
    def _merge(base: Limits, over: Mapping[str, int | None]) -> Limits:
        return {name: value if (value := over.get(name)) is not None else base[name] for name in base}

    # --- per user -------------------------------------------------------------

    async def report(self, principal: Principal, user_id: str) -> QuotaReport:
        """Admins see anyone's; a member only their own (anyone else's is not found)."""
        async with self.ctx.sessions() as session:
            user = await session.get(User, user_id)
            if user is None or (not principal.is_admin and user.id != principal.user_id):
                raise NotFoundError(f"user {user_id} not found", details={"userId": user_id})
            limits = await self.limits_in(session, user_id)
            overrides = stored(await session.get(UserQuota, user_id))
            usage = await sandbox_usage(session, user_id)
        exempt = user.role == "admin"
        return QuotaReport(
            user_id=user_id, exempt=exempt,
            limits={name: None if exempt else value for name, value in limits.items()},
            overrides=overrides,
            usage={"sandboxes": usage[0], **usage[1].wire(),
                   "commands": self.commands.used(user_id), "shells": self.shells.used(user_id)})

    async def set_overrides(self, principal: Principal, user_id: str, changes: Changes) -> QuotaReport:
        check_changes(changes)
        async with self.ctx.sessions() as session:
            if await session.get(User, user_id) is None:
                raise NotFoundError(f"user {user_id} not found", details={"userId": user_id})
            row = await session.get(UserQuota, user_id)
            if row is None:
                row = UserQuota(user_id=user_id)
                session.add(row)
            _apply(row, changes)
            row.updated_at = self.ctx.clock()
            await session.commit()
        return await self.report(principal, user_id)

    # --- checks ---------------------------------------------------------------

    async def check_spawn(self, session: AsyncSession, principal: Principal, request: Resources) -> None:
        """In the spawn's admission transaction: the user's live sandboxes leave room for ``request``."""
        if principal.is_admin:
            return
        # Serialises one user's spawns on PostgreSQL even across hosts (SQLite has one writer).
        await session.execute(select(User.id).where(User.id == principal.user_id).with_for_update())
        limits = await self.limits_in(session, principal.user_id)
        count, reserved = await sandbox_usage(session, principal.user_id)
        checks = (("sandboxes", count, 1), ("vcpus", reserved.vcpus, request.vcpus),
                  ("memoryMb", reserved.memory_mb, request.memory_mb),
                  ("diskMb", reserved.disk_mb, request.disk_mb))
        for quota, used, requested in checks:
            if used + requested > limits[quota]:
                raise exceeded(quota, limits[quota], used, requested)

    async def command_slot(self, principal: Principal) -> CommandSlot:
        """A slot for an exec or a background command; release it (or keep it while running)."""
        return await self.commands.take(principal.user_id, await self.limit(principal, "commands"))

    async def shell_slot(self, principal: Principal) -> Slot:
        return self.shells.take(principal.user_id, await self.limit(principal, "shells"))

    async def _still_running(self, sandbox_id: str, pids: frozenset[int]) -> frozenset[int]:
        async with self.ctx.sessions() as session:
            sandbox = await session.get(Sandbox, sandbox_id)
        if sandbox is None or SandboxState(sandbox.status) not in LIVE_STATES or sandbox.host_id is None:
            return frozenset()
        try:
            listed = await self.ctx.agents.for_host(sandbox.host_id).processes.list(sandbox_id)
        except SandboxNotFoundError:
            return frozenset()
        except QboxError:
            return pids  # the host cannot tell now: keep counting them
        return frozenset(command.pid for command in listed if command.alive) & pids


async def sandbox_usage(session: AsyncSession, user_id: str) -> tuple[int, Resources]:
    """How many live sandboxes the user has, and what they reserve."""
    row = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Sandbox.vcpus), 0),
               func.coalesce(func.sum(Sandbox.memory_mb), 0),
               func.coalesce(func.sum(Sandbox.disk_size_mb), 0))
        .where(Sandbox.owner_id == user_id, Sandbox.status.in_(values_of(LIVE_STATES))))).one()
    return int(row[0]), Resources(int(row[1]), int(row[2]), int(row[3] or 0))
