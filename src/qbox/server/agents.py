"""The control plane's client for host agents (docs/agent-protocol.md).

One Protocol, one HTTP implementation. Agent errors come back in the public
error envelope and are re-raised as the same ``qbox.core.errors`` class, so a
``sandbox_not_found`` from the agent is a ``SandboxNotFoundError`` here. An
agent that cannot be reached is ``HostUnavailableError`` (503, transient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from qbox.core.errors import HostUnavailableError, QboxError, error_from_wire

# Exec and command calls may legitimately run long; the agent enforces the
# command's own timeout, this is the backstop for a stuck agent.
_DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_EXEC_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class AgentEndpoint:
    """How to reach one agent: a unix socket path or an http(s) URL, and its secret."""

    address: str
    secret: str


class AgentClient(Protocol):
    async def health(self) -> dict[str, Any]: ...
    async def import_image(self, ref: str, name: str) -> dict[str, Any]: ...
    async def create_sandbox(self, spec: dict[str, Any]) -> dict[str, Any]: ...
    async def list_sandboxes(self) -> list[dict[str, Any]]: ...
    async def delete_sandbox(self, sandbox_id: str) -> None: ...
    async def exec(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]: ...
    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]: ...
    async def command_logs(self, sandbox_id: str, pid: int) -> dict[str, Any]: ...
    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None: ...
    async def aclose(self) -> None: ...


class HttpAgentClient:
    def __init__(self, endpoint: AgentEndpoint, transport: httpx.AsyncBaseTransport | None = None):
        if transport is None and not endpoint.address.startswith(("http://", "https://")):
            transport = httpx.AsyncHTTPTransport(uds=endpoint.address)
            base_url = "http://agent"
        else:
            base_url = endpoint.address if endpoint.address.startswith("http") else "http://agent"
        self._endpoint = endpoint
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/internal/v1",
            transport=transport,
            timeout=_DEFAULT_TIMEOUT,
            headers={"Authorization": f"Bearer {endpoint.secret}"},
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TimeoutException as exc:
            raise HostUnavailableError(f"host agent did not answer in time ({method} {path})") from exc
        except httpx.TransportError as exc:
            raise HostUnavailableError(f"host agent unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            error = error_from_wire(response.status_code, body)
            if error.status == 401:
                # Our own credentials to the agent are wrong: not the client's fault.
                raise QboxError("control plane is not authorised at the host agent",
                                code="internal", status=500)
            raise error
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    async def import_image(self, ref: str, name: str) -> dict[str, Any]:
        # Pulling and unpacking an image can take minutes.
        result: dict[str, Any] = await self._call(
            "POST", "/images", json={"ref": ref, "name": name}, timeout=1800
        )
        return result

    async def create_sandbox(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/sandboxes", json=spec, timeout=120)
        return result

    async def list_sandboxes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/sandboxes")
        return result or []

    async def delete_sandbox(self, sandbox_id: str) -> None:
        await self._call("DELETE", f"/sandboxes/{sandbox_id}", timeout=60)

    async def exec(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        timeout = body.get("timeoutSeconds")
        budget = (float(timeout) if timeout else 3600.0) + _EXEC_GRACE_SECONDS
        result: dict[str, Any] = await self._call(
            "POST", f"/sandboxes/{sandbox_id}/exec", json=body, timeout=budget
        )
        return result

    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/sandboxes/{sandbox_id}/commands", json=body
        )
        return result

    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", f"/sandboxes/{sandbox_id}/commands")
        return result or []

    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", f"/sandboxes/{sandbox_id}/commands/{pid}"
        )
        return result

    async def command_logs(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", f"/sandboxes/{sandbox_id}/commands/{pid}/logs"
        )
        return result

    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None:
        await self._call(
            "DELETE", f"/sandboxes/{sandbox_id}/commands/{pid}", params={"signal": signal}
        )

    async def aclose(self) -> None:
        await self._http.aclose()
