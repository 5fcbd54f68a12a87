"""Shells in a sandbox: a WebSocket to the agent, relayed frame for frame.

A refused upgrade carries the error envelope and is raised as the same
QboxError before anything is relayed. How the WebSocket is opened is a seam
(``ShellConnector``): tests reach the agent app in-process, as ``transport=``
does for HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from qbox.core.errors import HostUnavailableError
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client.transport import PREFIX, AgentEndpoint, agent_error, path

# A shell's output frames are at most 64 KiB; 1 MiB leaves room for a larger agent.
# Few frames are queued, so a slow client soon stops reading from the agent's socket.
_SHELL_MAX_MESSAGE = 1024 * 1024
_SHELL_MAX_QUEUE = 4
_SHELL_OPEN_TIMEOUT = 10.0
_SHELL_CLOSE_TIMEOUT = 5.0


class AgentShell(Protocol):
    """A shell running on an agent: send client frames verbatim, iterate over its output.

    Iteration ends when the agent closes (``close_code``/``close_reason`` then
    tell how; ``1006`` if the connection broke). A frame sent after the end is dropped.
    """

    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str: ...
    async def send(self, frame: str | bytes) -> None: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def close(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


# Opens an agent's shell WebSocket: (path with query, headers) -> the open shell.
ShellConnector = Callable[[str, dict[str, str]], Awaitable[AgentShell]]


class _WebSocketShell:
    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        return self._connection.close_reason or ""

    async def send(self, frame: str | bytes) -> None:
        try:
            await self._connection.send(frame)
        except ConnectionClosed:
            pass  # iteration reports the end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for message in self._connection:
                yield message if isinstance(message, bytes) else message.encode()
        except ConnectionClosed:
            return

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def denial_body(raw: bytes | None) -> Any:
    """A refused upgrade's body: the error envelope, or its text."""
    text = (raw or b"").decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def websocket_connector(endpoint: AgentEndpoint) -> ShellConnector:
    """The real connector: a WebSocket over the agent's unix socket or TCP."""

    async def connect_shell(url: str, headers: dict[str, str]) -> AgentShell:
        limits: dict[str, Any] = {"max_size": _SHELL_MAX_MESSAGE, "max_queue": _SHELL_MAX_QUEUE,
                                  "open_timeout": _SHELL_OPEN_TIMEOUT,
                                  "close_timeout": _SHELL_CLOSE_TIMEOUT,
                                  "compression": None, "proxy": None}
        address = endpoint.address
        try:
            if endpoint.over_http:
                uri = "ws" + address.removeprefix("http").rstrip("/") + url
                connection = await connect(uri, additional_headers=headers, ssl=endpoint.tls(), **limits)
            else:
                connection = await unix_connect(address, "ws://agent" + url,
                                                additional_headers=headers, **limits)
        except InvalidStatus as exc:
            raise agent_error(exc.response.status_code,
                              denial_body(bytes(exc.response.body or b""))) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise HostUnavailableError(f"host agent unreachable: {exc!r}") from exc
        return _WebSocketShell(connection)

    return connect_shell


class ShellClient:
    def __init__(self, endpoint: AgentEndpoint, connector: ShellConnector | None = None) -> None:
        self._endpoint = endpoint
        self._connect = connector or websocket_connector(endpoint)

    async def open(self, sandbox_id: str, query: ShellQuery) -> AgentShell:
        """Refused upgrades are raised as their QboxError, before anything is relayed."""
        url = f"{PREFIX}{path('sandboxes', sandbox_id, 'shell')}?{urlencode(query.wire())}"
        return await self._connect(url, {"Authorization": f"Bearer {self._endpoint.secret}"})
