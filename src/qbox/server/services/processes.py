"""Commands in a sandbox: forwarded to the sandbox's host agent once access is checked.

The agent owns the process table; the control plane checks ownership and
state, then relays. A sandbox the agent no longer knows is marked lost here.
Answers that carry output (an /exec's, a log read, follows) are ``Relayed``
as they arrive, never read whole: the caller streams them on and closes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from qbox.protocol.processes import (
    CommandStart,
    CommandStarted,
    CommandStatus,
    ExecRequest,
    LogOffsets,
    StdinWrite,
)
from qbox.server.agent_client import AgentClient, Relayed
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.sandboxes import SandboxService

T = TypeVar("T")


class ProcessService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes

    async def _relay(self, principal: Principal, sandbox_id: str,
                     call: Callable[[AgentClient], Awaitable[T]]) -> T:
        return await self.sandboxes.relay(principal, sandbox_id, call)

    async def exec(self, principal: Principal, sandbox_id: str, request: ExecRequest) -> Relayed:
        """The answer's JSON, once the command has ended."""
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.exec_relayed(sandbox_id, request))

    async def exec_stream(self, principal: Principal, sandbox_id: str,
                          request: ExecRequest) -> Relayed:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.exec_stream(sandbox_id, request))

    async def start(self, principal: Principal, sandbox_id: str,
                    request: CommandStart) -> CommandStarted:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.start(sandbox_id, request))

    async def find(self, principal: Principal, sandbox_id: str) -> list[CommandStatus]:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.list(sandbox_id))

    async def status(self, principal: Principal, sandbox_id: str, pid: int) -> CommandStatus:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.status(sandbox_id, pid))

    async def logs(self, principal: Principal, sandbox_id: str, pid: int,
                   offsets: LogOffsets) -> Relayed:
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.logs(sandbox_id, pid, offsets))

    async def follow(self, principal: Principal, sandbox_id: str, pid: int,
                     offsets: LogOffsets) -> Relayed:
        """NDJSON lines of output, then the exit; errors come before the first line."""
        return await self._relay(principal, sandbox_id,
                                 lambda agent: agent.processes.follow(sandbox_id, pid, offsets))

    async def write_stdin(self, principal: Principal, sandbox_id: str, pid: int,
                          write: StdinWrite) -> None:
        await self._relay(principal, sandbox_id,
                          lambda agent: agent.processes.write_stdin(sandbox_id, pid, write))

    async def kill(self, principal: Principal, sandbox_id: str, pid: int, signal: int) -> None:
        await self._relay(principal, sandbox_id,
                          lambda agent: agent.processes.kill(sandbox_id, pid, signal))
