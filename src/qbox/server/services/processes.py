"""Commands in a sandbox: forwarded to the sandbox's host agent once access is checked.

The agent owns the process table; the control plane checks ownership and
state, then relays. A sandbox the agent no longer knows is marked lost here.
Answers that carry output (an /exec's, a log read, follows) are ``Relayed``
as they arrive, never read whole: the caller streams them on and closes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from qbox.server.agents import AgentClient, Relayed
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal
from qbox.server.services.sandboxes import SandboxService

T = TypeVar("T")


class ProcessService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes

    async def _relay(self, principal: Principal, sandbox_id: str,
                     call: Callable[[AgentClient], Awaitable[T]]) -> T:
        return await self.sandboxes.relay(principal, sandbox_id, call)

    async def exec(self, principal: Principal, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        """The answer's JSON, once the command has ended."""
        return await self._relay(principal, sandbox_id, lambda a: a.exec_relayed(sandbox_id, body))

    async def start(self, principal: Principal, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id, lambda a: a.start_command(sandbox_id, body))

    async def find(self, principal: Principal, sandbox_id: str) -> list[dict[str, Any]]:
        return await self._relay(principal, sandbox_id, lambda a: a.list_commands(sandbox_id))

    async def status(self, principal: Principal, sandbox_id: str, pid: int) -> dict[str, Any]:
        return await self._relay(principal, sandbox_id, lambda a: a.command_status(sandbox_id, pid))

    async def logs(self, principal: Principal, sandbox_id: str, pid: int,
                   offsets: dict[str, int] | None = None) -> Relayed:
        return await self._relay(principal, sandbox_id,
                                 lambda a: a.command_logs(sandbox_id, pid, offsets))

    async def follow(self, principal: Principal, sandbox_id: str, pid: int,
                     offsets: dict[str, int]) -> Relayed:
        """NDJSON lines of output, then the exit; errors come before the first line."""
        return await self._relay(principal, sandbox_id,
                                 lambda a: a.follow_command(sandbox_id, pid, offsets))

    async def exec_stream(self, principal: Principal, sandbox_id: str,
                          body: dict[str, Any]) -> Relayed:
        return await self._relay(principal, sandbox_id, lambda a: a.exec_stream(sandbox_id, body))

    async def write_stdin(self, principal: Principal, sandbox_id: str, pid: int,
                          body: dict[str, Any]) -> None:
        await self._relay(principal, sandbox_id, lambda a: a.write_stdin(sandbox_id, pid, body))

    async def kill(self, principal: Principal, sandbox_id: str, pid: int, signal: int) -> None:
        await self._relay(principal, sandbox_id, lambda a: a.kill_command(sandbox_id, pid, signal))
