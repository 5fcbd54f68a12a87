"""Sandboxes on one host: boot, list, change their deadline, delete."""

from __future__ import annotations

from datetime import datetime

from qbox.protocol.sandboxes import (
    SandboxClaim,
    SandboxCreated,
    SandboxDeadline,
    SandboxEnvs,
    SandboxInfo,
    SandboxSpec,
)
from qbox.server.agent_client.transport import Transport, parsed, parsed_list, path


class SandboxClient:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(self, spec: SandboxSpec) -> SandboxCreated:
        """Answers once the sandbox's init runs (a boot may take a while)."""
        return parsed(SandboxCreated, await self._transport.call(
            "POST", "/sandboxes", body=spec, timeout=120))

    async def list(self) -> list[SandboxInfo]:
        """Every sandbox the agent holds (build sandboxes aside)."""
        return parsed_list(SandboxInfo, await self._transport.call("GET", "/sandboxes") or [])

    async def set_deadline(self, sandbox_id: str, deadline: datetime | None) -> None:
        """The agent ends the sandbox at ``deadline`` (reason "timeout") if no control plane
        did first; None: never. 404 ``sandbox_not_found`` when the host does not hold it."""
        await self._transport.call("PUT", path("sandboxes", sandbox_id, "deadline"),
                                   body=SandboxDeadline(deadline_at=deadline))

    async def claim(self, sandbox_id: str, claim: SandboxClaim) -> SandboxInfo:
        """A booted sandbox takes a request's envs, smaller limits and deadline. 404
        ``sandbox_not_found``; 409 when it is not running; 422 when a limit grows."""
        return parsed(SandboxInfo, await self._transport.call(
            "POST", path("sandboxes", sandbox_id, "claim"), body=claim))

    async def set_envs(self, sandbox_id: str, envs: dict[str, str]) -> None:
        """``envs`` become the sandbox's whole env for its later commands, shells and code
        executions. 404 ``sandbox_not_found``; 409 when it is not running."""
        await self._transport.call("PUT", path("sandboxes", sandbox_id, "envs"),
                                   body=SandboxEnvs(envs=envs))

    async def delete(self, sandbox_id: str) -> None:
        """Idempotent: an unknown id is fine."""
        await self._transport.call("DELETE", path("sandboxes", sandbox_id), timeout=60)
