"""How the agent relays to a sandbox's port (``ports_api.py`` holds the routes).

One upstream connection pool per agent (HTTP/1.1 keep-alive), a bound on each
sandbox's open relays, the HTTP answer streamed back chunk by chunk and the
WebSocket relayed message by message, each with backpressure (one chunk or
message sent on before the next is read) and no read timeout on a body. A
relay ends when its sandbox stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from qbox.agent.sandbox import Sandbox, SandboxStatus
from qbox.core.errors import (
    BadGatewayError,
    HostNoCapacityError,
    PortNotReachableError,
    QboxError,
    ValidationError,
)
from qbox.protocol.ports import RELAYED_HEADER, Headers, end_to_end, wrap

log = logging.getLogger("qbox.agent.ports")

MAX_RELAYS_PER_SANDBOX = 256
# Nothing listening is refused at once; a port that drops SYNs is given up on quickly.
CONNECT_TIMEOUT = 1.0
# An upstream may think before its answer's head (a dev server's first compile)...
HEAD_TIMEOUT = 120.0
# ... and before accepting a WebSocket.
WS_HANDSHAKE_TIMEOUT = 30.0
# Kept-alive upstream connections are dropped before common servers drop them
# (Node's default is 5 s), so a reused connection has rarely been closed under us.
KEEPALIVE_EXPIRY = 4.0
POOL_LIMITS = httpx.Limits(max_connections=4096, max_keepalive_connections=256,
                           keepalive_expiry=KEEPALIVE_EXPIRY)
# Past the pool's size a request waits this long for a connection, then is refused.
POOL_WAIT = 10.0
RELAY_TIMEOUT = {"connect": CONNECT_TIMEOUT, "read": None, "write": None, "pool": POOL_WAIT}
# How often a relay looks whether its sandbox still runs.
SANDBOX_CHECK_SECONDS = 1.0
# A relayed WebSocket's messages (the control plane's client takes as much).
WS_MAX_MESSAGE = 16 * 1024 * 1024
WS_MAX_QUEUE = 4
# Close codes never sent in a close frame (RFC 6455 §7.4.1), and what is sent instead.
_NO_STATUS, _ABNORMAL, _TLS_FAILED = 1005, 1006, 1015
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_INTERNAL = 1000, 1001, 1011


class PortRelays:
    """The agent's upstream connection pool and how many relays each sandbox has open."""

    def __init__(self, max_per_sandbox: int = MAX_RELAYS_PER_SANDBOX,
                 pool: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_per_sandbox = max_per_sandbox
        self.pool = pool or httpx.AsyncHTTPTransport(limits=POOL_LIMITS, retries=0)
        self._open: dict[str, int] = {}

    def open_count(self, sandbox_id: str) -> int:
        return self._open.get(sandbox_id, 0)

    def take(self, sandbox_id: str) -> None:
        """Count one more relay for the sandbox; refused (503) past the limit."""
        count = self._open.get(sandbox_id, 0)
        if count >= self.max_per_sandbox:
            raise HostNoCapacityError(
                f"sandbox {sandbox_id} has {count} connections to its ports open already; "
                "retry when some have ended", details={"sandboxId": sandbox_id})
        self._open[sandbox_id] = count + 1

    def give_back(self, sandbox_id: str) -> None:
        count = self._open.get(sandbox_id, 0) - 1
        if count > 0:
            self._open[sandbox_id] = count
        else:
            self._open.pop(sandbox_id, None)

    async def aclose(self) -> None:
        await self.pool.aclose()


def not_listening(sandbox_id: str, port: int, exc: BaseException) -> PortNotReachableError:
    return PortNotReachableError(
        f"nothing accepts connections on port {port} of sandbox {sandbox_id}",
        details={"sandboxId": sandbox_id, "port": port, "reason": type(exc).__name__})


async def until_stopped(sandbox: Sandbox) -> None:
    """Returns once the sandbox no longer runs."""
    while sandbox.status is SandboxStatus.RUNNING:
        await asyncio.sleep(SANDBOX_CHECK_SECONDS)


# --- probe ---------------------------------------------------------------------

async def reachable(address: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether something accepts a TCP connection at ``address:port`` within ``timeout``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# --- HTTP ----------------------------------------------------------------------

class VisitorGone(Exception):
    """The request's sender went away before its body was whole."""


async def request_body(receive: Receive) -> AsyncIterator[bytes]:
    """The request's body as it arrives. A sender gone before its end raises
    ``VisitorGone``, which breaks the upstream request off: a cut upload never reaches
    the upstream as a whole (shorter) one."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise VisitorGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def open_upstream(relays: PortRelays, request: httpx.Request, sandbox_id: str,
                         port: int, replayable: bool) -> httpx.Response:
    """The upstream's answer, once its head has come. A kept-alive connection the upstream
    closed meanwhile is retried once on a new one (when the body can be sent again)."""
    for attempt in (1, 2):
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                return await relays.pool.handle_async_request(request)
        except TimeoutError:
            raise QboxError(
                f"port {port} of sandbox {sandbox_id} did not answer within {HEAD_TIMEOUT:.0f} s",
                code="upstream_timeout", status=504,
                details={"sandboxId": sandbox_id, "port": port}) from None
        except httpx.PoolTimeout as exc:
            raise HostNoCapacityError("the host's connections to sandbox ports are all in use; "
                                      "retry shortly") from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise not_listening(sandbox_id, port, exc) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            if attempt == 1 and replayable:
                continue
            raise BadGatewayError(
                f"port {port} of sandbox {sandbox_id} broke the connection before answering",
                details={"sandboxId": sandbox_id, "port": port,
                         "reason": type(exc).__name__}) from exc
        except httpx.HTTPError as exc:
            raise BadGatewayError(
                f"port {port} of sandbox {sandbox_id} gave no usable answer: {exc}",
                details={"sandboxId": sandbox_id, "port": port}) from exc
    raise AssertionError("unreachable")


class RelayedAnswer(Response):
    """The upstream's answer, sent on as it comes; its sandbox slot is given back and the
    upstream closed at the end, also when the visitor left or the sandbox stopped."""

    def __init__(self, upstream: httpx.Response, sandbox: Sandbox, method: str,
                 release: Any) -> None:
        super().__init__(status_code=upstream.status_code)
        self._upstream = upstream
        self._sandbox = sandbox
        self._release = release
        # As sent, byte for byte (latin-1 maps each byte to one character and back).
        headers = end_to_end((name.decode("latin-1"), value.decode("latin-1"))
                             for name, value in upstream.headers.raw)
        self._sends_body = method != "HEAD" and upstream.status_code not in (204, 304)
        raw: list[tuple[bytes, bytes]] = [(RELAYED_HEADER.encode(), b"1")]
        length = upstream.headers.get("content-length", "")
        if self._sends_body and length.isdigit():
            # The upstream's framing, kept: a body that ends short ends the relay broken.
            raw.append((b"content-length", length.encode()))
        raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in wrap(headers)]
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            if self._sends_body and not await self._relay_body(receive, send):
                # Broken off: the answer is left incomplete, which makes the server drop
                # the connection (an error line in its log), so the control plane sees a
                # broken answer, never a short one passing for whole.
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self._upstream.aclose()
            self._release()

    async def _relay_body(self, receive: Receive, send: Send) -> bool:
        """The body, until its end (True), the visitor's leaving, the upstream breaking
        off or the sandbox stopping (False)."""
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(self._visitor_gone(receive))
        stopped = asyncio.ensure_future(until_stopped(self._sandbox))
        tasks = (pump, gone, stopped)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if pump.done() and not pump.cancelled():
            error = pump.exception()
            if error is None:
                return True
            if not isinstance(error, httpx.HTTPError):
                raise error
            log.info("sandbox %s: the upstream broke off its answer: %r", self._sandbox.id, error)
        elif stopped.done() and not stopped.cancelled():
            log.info("sandbox %s stopped during a relayed answer", self._sandbox.id)
        return False

    async def _pump(self, send: Send) -> None:
        async for chunk in self._upstream.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

    @staticmethod
    async def _visitor_gone(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


# --- WebSocket -----------------------------------------------------------------

# The Host a WebSocket's upstream is shown: a name or address and maybe a port, nothing else.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def _sendable(code: int | None, fallback: int) -> int:
    """A close code that may travel in a close frame."""
    if code is None or code in (_NO_STATUS, _ABNORMAL, _TLS_FAILED):
        return fallback
    return code


async def connect_upstream(address: str, port: int, target: str, headers: Headers,
                            subprotocols: list[str], sandbox_id: str) -> ClientConnection:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (address, port)),
                               CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise not_listening(sandbox_id, port, exc) from exc
    host = next(value for name, value in headers if name == "host")
    others = [(name, value) for name, value in headers if name != "host"]
    if not _HOST.fullmatch(host):
        sock.close()
        raise ValidationError.for_fields({"host": "must be a host name or address and a port"})
    try:
        return await connect(
            f"ws://{host}{target}", sock=sock, additional_headers=others,
            subprotocols=[Subprotocol(name) for name in subprotocols] or None,
            user_agent_header=None, compression=None, proxy=None,
            open_timeout=WS_HANDSHAKE_TIMEOUT, ping_interval=None,
            max_size=WS_MAX_MESSAGE, max_queue=WS_MAX_QUEUE)
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise BadGatewayError(
            f"port {port} of sandbox {sandbox_id} refused the WebSocket ({status})",
            details={"sandboxId": sandbox_id, "port": port, "upstreamStatus": status}) from None
    except InvalidURI as exc:
        sock.close()
        raise ValidationError.for_fields({"host": "must be a host name or address and a port"}
                                         ) from exc
    except TimeoutError as exc:
        raise QboxError(
            f"port {port} of sandbox {sandbox_id} did not complete the WebSocket handshake "
            f"within {WS_HANDSHAKE_TIMEOUT:.0f} s", code="upstream_timeout", status=504,
            details={"sandboxId": sandbox_id, "port": port}) from exc
    except (InvalidHandshake, OSError) as exc:
        raise BadGatewayError(
            f"port {port} of sandbox {sandbox_id} broke the WebSocket handshake: {exc}",
            details={"sandboxId": sandbox_id, "port": port}) from exc


async def _to_upstream(websocket: WebSocket, upstream: ClientConnection) -> tuple[int, str]:
    """The visitor's messages, each sent on before the next is taken; then how it closed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return message.get("code", CLOSE_NORMAL), message.get("reason") or ""
        data = message.get("bytes")
        await upstream.send(data if data is not None else message.get("text", ""))


async def _to_visitor(websocket: WebSocket, upstream: ClientConnection) -> None:
    """The upstream's messages, each sent on before the next is read."""
    with contextlib.suppress(ConnectionClosed):
        async for message in upstream:
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)


async def relay_websocket(websocket: WebSocket, upstream: ClientConnection,
                          sandbox: Sandbox) -> None:
    """Relay both ways until one side closes, then close the other with its code."""
    inbound = asyncio.ensure_future(_to_upstream(websocket, upstream))
    outbound = asyncio.ensure_future(_to_visitor(websocket, upstream))
    stopped = asyncio.ensure_future(until_stopped(sandbox))
    tasks = (inbound, outbound, stopped)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if inbound.done() and inbound.exception() is None:
            code, reason = inbound.result()
            await upstream.close(_sendable(code, CLOSE_NORMAL), reason)
        elif outbound.done():
            upstream_code, reason = upstream.close_code, upstream.close_reason or ""
            if upstream_code in (None, _ABNORMAL):
                upstream_code, reason = CLOSE_INTERNAL, "the upstream connection broke"
            await _close_visitor(websocket, _sendable(upstream_code, CLOSE_NORMAL), reason)
        elif stopped.done():
            await _close_visitor(websocket, CLOSE_GOING_AWAY, "the sandbox stopped")
        else:
            await _close_visitor(websocket, CLOSE_INTERNAL, "relay failed")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await upstream.close()


async def _close_visitor(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason[:120])
