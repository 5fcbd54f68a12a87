"""The code interpreter in a sandbox: languages, contexts, executions."""

from __future__ import annotations

from qbox.protocol.code import CodeExecute, Context, ContextCreate, Contexts, Languages
from qbox.server.agent_client.transport import UNBOUNDED, Relayed, Transport, parsed, path

# Starting a kernel takes a second or two, more on a busy host.
_KERNEL_START_SECONDS = 120


class CodeClient:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def languages(self, sandbox_id: str) -> Languages:
        return parsed(Languages, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "code", "languages")))

    async def contexts(self, sandbox_id: str) -> Contexts:
        return parsed(Contexts, await self._transport.call(
            "GET", path("sandboxes", sandbox_id, "code", "contexts")))

    async def create_context(self, sandbox_id: str, request: ContextCreate) -> Context:
        return parsed(Context, await self._transport.call(
            "POST", path("sandboxes", sandbox_id, "code", "contexts"), body=request,
            timeout=_KERNEL_START_SECONDS))

    async def restart_context(self, sandbox_id: str, context_id: str) -> Context:
        return parsed(Context, await self._transport.call(
            "POST", path("sandboxes", sandbox_id, "code", "contexts", context_id, "restart"),
            timeout=_KERNEL_START_SECONDS))

    async def delete_context(self, sandbox_id: str, context_id: str) -> None:
        await self._transport.call(
            "DELETE", path("sandboxes", sandbox_id, "code", "contexts", context_id), timeout=60)

    async def execute(self, sandbox_id: str, request: CodeExecute) -> Relayed:
        """NDJSON CodeEvent lines (WIRE_PROTOCOL §5.1); an error before the first is raised.
        Close it once done (also unread): an execution left before ``complete`` is
        cancelled by the agent."""
        # No read timeout: the execution's own timeout is the agent's to enforce.
        return await self._transport.relayed(self._transport.request(
            "POST", path("sandboxes", sandbox_id, "code", "execute"), long=True,
            json=request.wire(), headers={"Accept": "application/x-ndjson"},
            timeout=UNBOUNDED), lines=True)
