"""Commands in a sandbox: /exec (whole, relayed or streamed), background commands, logs."""

from __future__ import annotations

import httpx

from qbox.protocol.processes import (
    DEFAULT_EXEC_TIMEOUT,
    CommandStart,
    CommandStarted,
    CommandStatus,
    ExecRequest,
    ExecResult,
    LogOffsets,
    StdinWrite,
)
from qbox.server.agent_client.transport import (
    TRANSFER_TIMEOUT,
    UNBOUNDED,
    Relayed,
    Transport,
    long_timeout,
    parsed,
    parsed_list,
    path,
)

NDJSON = {"Accept": "application/x-ndjson"}
# An /exec's answer comes when its command ends: the agent enforces its timeout, this
# much later the control plane gives up on a stuck agent.
_EXEC_GRACE_SECONDS = 15.0


class ProcessClient:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def _exec_request(self, sandbox_id: str, request: ExecRequest) -> httpx.Request:
        budget = (request.timeout_seconds or DEFAULT_EXEC_TIMEOUT) + _EXEC_GRACE_SECONDS
        return self._transport.request("POST", path("sandboxes", sandbox_id, "exec"), long=True,
                                       json=request.wire(), timeout=long_timeout(budget))

    async def exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        """An /exec's answer, read whole (the control plane's own short commands: readyCmd)."""
        response = await self._transport.send(self._exec_request(sandbox_id, request), long=True)
        return parsed(ExecResult, response.json())

    async def exec_relayed(self, sandbox_id: str, request: ExecRequest) -> Relayed:
        """An /exec's ``ExecResult`` JSON as it arrives (its output is never one string here);
        an error before the first byte is raised."""
        return await self._transport.relayed(self._exec_request(sandbox_id, request))

    async def exec_stream(self, sandbox_id: str, request: ExecRequest) -> Relayed:
        """An /exec as NDJSON events: started, output, the exit."""
        return await self._transport.relayed(self._transport.request(
            "POST", path("sandboxes", sandbox_id, "exec"), long=True, json=request.wire(),
            headers=NDJSON, timeout=UNBOUNDED), lines=True)

    async def start(self, sandbox_id: str, request: CommandStart) -> CommandStarted:
        return parsed(CommandStarted, await self._transport.call(
            "POST", path("sandboxes", sandbox_id, "commands"), body=request))

    async def list(self, sandbox_id: str) -> list[CommandStatus]:
        return parsed_list(CommandStatus, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "commands")) or [])

    async def status(self, sandbox_id: str, pid: int) -> CommandStatus:
        return parsed(CommandStatus, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "commands", pid)))

    async def logs(self, sandbox_id: str, pid: int, offsets: LogOffsets) -> Relayed:
        """The ``CommandLogs`` JSON as it arrives."""
        return await self._transport.relayed(self._transport.request(
            "GET", path("sandboxes", sandbox_id, "commands", pid, "logs"), long=True,
            params=offsets.wire() or None, timeout=TRANSFER_TIMEOUT))

    async def follow(self, sandbox_id: str, pid: int, offsets: LogOffsets) -> Relayed:
        """NDJSON lines of output, then the exit; errors come before the first line."""
        return await self._transport.relayed(self._transport.request(
            "GET", path("sandboxes", sandbox_id, "commands", pid, "logs"), long=True,
            params={**offsets.wire(), "follow": "true"}, timeout=UNBOUNDED), lines=True)

    async def write_stdin(self, sandbox_id: str, pid: int, write: StdinWrite) -> None:
        await self._transport.call("POST", path("sandboxes", sandbox_id, "commands", pid, "stdin"),
                                   body=write)

    async def kill(self, sandbox_id: str, pid: int, signal: int) -> None:
        await self._transport.call("DELETE", path("sandboxes", sandbox_id, "commands", pid),
                                   params={"signal": signal})
