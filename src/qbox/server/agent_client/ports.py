"""A port inside a sandbox, reached through its agent (the preview proxy's data plane).

``http`` relays one request and hands back the upstream's answer as it comes
(status, end-to-end headers, body chunks); ``websocket`` opens a WebSocket to
the port. The agent only ever connects to the sandbox's own address. Its own
refusals (no such sandbox, nothing listening, …) are raised as their
QboxError; any other answer, 4xx and 5xx included, is the upstream's and is
returned as it is. The headers travel wrapped (``qbox.protocol.ports``), so a
visitor's ``Authorization`` or ``Host`` never meets the agent's.

Requests travel on the transport's relay pool (kept alive, no read timeout: a
download or an event stream may last as long as its visitor likes, and none
takes a long call's connection); WebSockets on the same endpoint, TLS and
secret as shells. ``PortSocketConnector`` is the WebSocket seam tests
replace, as ``ShellConnector`` is for shells.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from qbox.core.errors import HostUnavailableError, QboxError
from qbox.protocol.ports import (
    RELAYED_HEADER,
    TARGET_HEADER,
    Headers,
    PortProbe,
    end_to_end,
    origin_form,
    unwrap,
    wrap,
)
from qbox.server.agent_client.shells import denial_body
from qbox.server.agent_client.transport import (
    PREFIX,
    UNBOUNDED,
    AgentEndpoint,
    Transport,
    agent_error,
    parsed,
    path,
)

# One message of a relayed WebSocket may be this large; few are queued, so a slow
# reader soon stops the agent (and, through it, the upstream) from sending more.
PORT_WS_MAX_MESSAGE = 16 * 1024 * 1024
_PORT_WS_MAX_QUEUE = 4
_PORT_WS_OPEN_TIMEOUT = 15.0
_PORT_WS_CLOSE_TIMEOUT = 5.0
# 1006: the connection broke without a close frame (RFC 6455 §7.1.5).
CLOSE_ABNORMAL = 1006


class UpstreamResponse:
    """The upstream's answer: ``status``, ``headers`` (end-to-end, names in lower case, in
    their order, repeats kept), then its body chunks as they come. Close it once done,
    also when the body was never read. A body the sandbox breaks off (it ended, the
    upstream died) raises ``HostUnavailableError`` rather than ending as if complete."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status: int = response.status_code
        # As the upstream sent them, byte for byte (each byte one latin-1 character).
        self.headers: Headers = unwrap((name.decode("latin-1"), value.decode("latin-1"))
                                       for name, value in response.headers.raw)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise HostUnavailableError(f"the upstream's answer broke off: {exc!r}") from exc
        finally:
            await self._response.aclose()

    async def close(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class UpstreamSocket(Protocol):
    """A WebSocket to a sandbox's port: ``send`` text or binary messages, iterate over the
    upstream's (each ``str`` or ``bytes`` as it was sent). Iteration ends when either side
    closes; ``close_code``/``close_reason`` then say how (1006: the connection broke). A
    message sent after the end is dropped."""

    @property
    def subprotocol(self) -> str | None: ...
    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str: ...
    async def send(self, message: str | bytes) -> None: ...
    def __aiter__(self) -> AsyncIterator[str | bytes]: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


# Opens a port's WebSocket at the agent: (path with query, headers, subprotocols) -> it.
PortSocketConnector = Callable[[str, dict[str, str] | Headers, list[str]],
                               Awaitable[UpstreamSocket]]


class _PortSocket:
    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @property
    def subprotocol(self) -> str | None:
        return self._connection.subprotocol

    @property
    def close_code(self) -> int | None:
        if self._connection.close_code is None and self._connection.state.name == "CLOSED":
            return CLOSE_ABNORMAL
        return self._connection.close_code

    @property
    def close_reason(self) -> str:
        return self._connection.close_reason or ""

    async def send(self, message: str | bytes) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed:
            pass  # iteration reports the end

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            async for message in self._connection:
                yield message
        except ConnectionClosed:
            return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def port_socket_connector(endpoint: AgentEndpoint) -> PortSocketConnector:
    """The real connector: a WebSocket over the agent's unix socket or TCP (TLS for a
    joined host), as shells are opened."""

    async def connect_port(url: str, headers: dict[str, str] | Headers,
                           subprotocols: list[str]) -> UpstreamSocket:
        options: dict[str, Any] = {
            "max_size": PORT_WS_MAX_MESSAGE, "max_queue": _PORT_WS_MAX_QUEUE,
            "open_timeout": _PORT_WS_OPEN_TIMEOUT, "close_timeout": _PORT_WS_CLOSE_TIMEOUT,
            "compression": None, "proxy": None, "user_agent_header": None,
            "subprotocols": [Subprotocol(name) for name in subprotocols] or None}
        address = endpoint.address
        try:
            if endpoint.over_http:
                uri = "ws" + address.removeprefix("http").rstrip("/") + url
                connection = await connect(uri, additional_headers=headers,
                                           ssl=endpoint.tls(), **options)
            else:
                connection = await unix_connect(address, "ws://agent" + url,
                                                additional_headers=headers, **options)
        except InvalidStatus as exc:
            raise agent_error(exc.response.status_code,
                              denial_body(bytes(exc.response.body or b""))) from None
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise HostUnavailableError(f"host agent unreachable: {exc!r}") from exc
        return _PortSocket(connection)

    return connect_port


def _checked_target(target: str) -> str:
    if not origin_form(target):
        raise QboxError("the request target must be origin-form (/path?query)",
                        code="validation_error", status=400, details={"target": target[:200]})
    return target


class PortsClient:
    def __init__(self, transport: Transport, endpoint: AgentEndpoint,
                 connector: PortSocketConnector | None = None) -> None:
        self._transport = transport
        self._endpoint = endpoint
        self._connect = connector or port_socket_connector(endpoint)

    async def probe(self, sandbox_id: str, port: int) -> bool:
        """Whether something accepts TCP connections on the port (the agent tries ≤ 1 s).
        404 ``sandbox_not_found``, 409 ``sandbox_not_active`` as for any sandbox call."""
        answer = await self._transport.call(
            "POST", path("sandboxes", sandbox_id, "ports", port, "probe"))
        return parsed(PortProbe, answer).reachable

    async def http(self, sandbox_id: str, port: int, method: str, target: str,
                   headers: list[tuple[str, str]],
                   body: AsyncIterable[bytes] | None) -> UpstreamResponse:
        """Relay one request to ``http://{sandbox address}:{port}{target}``; the answer once
        its head arrived. ``headers`` are the visitor's, as ASGI gives them (each byte one
        latin-1 character; hop-by-hop ones are dropped here;
        ``Host`` is sent as given, else the agent sends ``localhost:{port}``). A
        ``Content-Length`` among them frames ``body``; without one a body goes chunked."""
        relayed = end_to_end(headers)
        framing = [(name, value) for name, value in relayed if name == "content-length"]
        wire = [(TARGET_HEADER, _checked_target(target))] + framing + wrap(
            (name, value) for name, value in relayed if name != "content-length")
        request = self._transport.request(
            method, path("sandboxes", sandbox_id, "ports", port, "http"), relay=True,
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in wire],
            content=body, timeout=UNBOUNDED)
        response = await self._transport.send(request, stream=True, relay=True,
                                               relayed_marked=RELAYED_HEADER)
        return UpstreamResponse(response)

    async def websocket(self, sandbox_id: str, port: int, target: str,
                        headers: list[tuple[str, str]],
                        subprotocols: list[str]) -> UpstreamSocket:
        """A WebSocket to the port, open once the upstream accepted it (``subprotocol``: the
        upstream's choice among ``subprotocols``). Nothing listening is 502
        ``port_not_reachable``; an upstream that refused the handshake 502 ``bad_gateway``
        (``details.upstreamStatus``: its answer's status); other refusals their QboxError."""
        url = PREFIX + path("sandboxes", sandbox_id, "ports", port, "ws")
        wire: Headers = [("Authorization", f"Bearer {self._endpoint.secret}"),
                         (TARGET_HEADER, _checked_target(target))]
        wire += wrap(end_to_end(headers, websocket=True))
        return await self._connect(url, wire, subprotocols)
