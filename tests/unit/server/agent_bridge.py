"""The wire between the control plane under test and a real agent app on its own event loop.

``BridgeTransport`` is the HTTP side: an httpx transport that hands each request
to the agent's ASGI app and relays the answer as it comes (httpx's own
``ASGITransport`` reads an answer whole, so a follow, a build or an endless
cell would never return; and it cannot tell the app that its caller left).
``connect_shell`` is the WebSocket side: the control plane's ``shell_connector``,
speaking the ASGI WebSocket protocol to the agent's shell route.

The agent runs on another thread's loop, as it would in another process:
every message crosses loops, one at a time (a full side waits, as a socket's
would). Everything the control plane sent is recorded (``calls``, ``shells``),
and a few network faults can be switched on (``Faults``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
from anyio.from_thread import BlockingPortal

from qbox.core.errors import HostUnavailableError
from qbox.server.agent_client.shells import denial_body
from qbox.server.agent_client.transport import agent_error

T = TypeVar("T")
Message = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


@dataclass
class Call:
    """One HTTP request the control plane made to the agent."""

    method: str
    path: str  # below /internal/v1
    params: dict[str, str]
    body: bytes = b""
    chunks: int = 0  # how many pieces the body reached the agent in
    closed: bool = False  # the control plane closed the answer (read to its end, or left)
    received: bool = False  # the agent app has read the whole body

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Faults:
    """Network faults, switched on by tests."""

    # The agent cannot be reached (connection refused) for HTTP and shells.
    unreachable: bool = False
    # Answers to paths ending with one of these break off after their first line.
    cut_after_first_line: set[str] = field(default_factory=set)
    # The next request fails inside the client with this (not a network error).
    crash: BaseException | None = None


class _Hop:
    """Runs coroutines on the other side's loop and waits for them on ours."""

    def __init__(self, portal: BlockingPortal, loop: asyncio.AbstractEventLoop) -> None:
        self.portal = portal  # the agent's side
        self.loop = loop  # the control plane's side

    async def to_agent(self, coro: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return await asyncio.wrap_future(self.portal.start_task_soon(coro, *args))

    def start_on_agent(self, coro: Callable[..., Coroutine[Any, Any, Any]],
                       *args: Any) -> concurrent.futures.Future[Any]:
        return self.portal.start_task_soon(coro, *args)

    async def to_plane(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


_END = object()


class _Answer(httpx.AsyncByteStream):
    def __init__(self, call: Call, inbox: asyncio.Queue[Any], left: concurrent.futures.Future[None],
                 cut: bool) -> None:
        self._call, self._inbox, self._left, self._cut = call, inbox, left, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (message := await self._inbox.get()) is not _END:
            body = message.get("body", b"")
            if self._cut and b"\n" in body:
                yield body[:body.index(b"\n") + 1]
                await self.aclose()
                raise httpx.ReadError("the agent connection broke")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self._call.closed = True
        if not self._left.done():
            self._left.set_result(None)  # the agent app sees http.disconnect
        while not self._inbox.empty():  # a send waiting for room ends (and is dropped)
            self._inbox.get_nowait()


class BridgeTransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp, portal: BlockingPortal, calls: list[Call],
                 faults: Faults) -> None:
        self._app, self._portal, self._calls, self._faults = app, portal, calls, faults

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._faults.crash is not None:
            crash, self._faults.crash = self._faults.crash, None
            raise crash
        if self._faults.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path.removeprefix("/internal/v1")
        call = Call(request.method, path, dict(request.url.params))
        self._calls.append(call)
        hop = _Hop(self._portal, asyncio.get_running_loop())
        inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        left: concurrent.futures.Future[None] = concurrent.futures.Future()
        chunks = request.stream.__aiter__()  # type: ignore[union-attr]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": request.method, "scheme": "http", "path": request.url.path,
                 "raw_path": request.url.raw_path.split(b"?")[0],
                 "query_string": request.url.query, "root_path": "",
                 "headers": [(k.lower(), v) for k, v in request.headers.raw],
                 "client": ("127.0.0.1", 1), "server": ("agent", 80)}

        async def next_chunk() -> bytes | None:
            try:
                return await chunks.__anext__()
            except StopAsyncIteration:
                return None

        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                chunk = await hop.to_plane(next_chunk())
                if chunk is not None:
                    call.body += chunk
                    call.chunks += 1
                    return {"type": "http.request", "body": chunk, "more_body": True}
                body_sent = True
                call.received = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # Shielded: a receive given up (the app stops listening) must not look like a leave.
            await asyncio.shield(asyncio.wrap_future(left))
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if not left.done():  # a server drops what comes after its client left
                await hop.to_plane(inbox.put(message))

        async def serve() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                if not left.done():
                    await hop.to_plane(inbox.put(_END))

        served = hop.start_on_agent(serve)
        try:
            start = await inbox.get()
        except BaseException:
            served.cancel()
            raise
        if start is _END:
            await asyncio.wrap_future(served)  # raises what the app raised
            return httpx.Response(500)
        cut = any(path.endswith(suffix) for suffix in self._faults.cut_after_first_line)
        return httpx.Response(start["status"], headers=start.get("headers", []),
                              stream=_Answer(call, inbox, left, cut))


# --- shells -----------------------------------------------------------------------------


@dataclass
class ShellLink:
    """One shell connection the control plane opened to the agent, as the agent saw it."""

    path: str
    query: dict[str, str]
    frames: list[str | bytes] = field(default_factory=list)  # what the control plane sent
    received_bytes: int = 0  # output the agent sent over the link
    closed: bool = False  # the control plane closed it
    # Cleared, frames wait before reaching the agent (an agent that takes nothing).
    accepting: asyncio.Event = field(default_factory=asyncio.Event)
    # Set, the agent's close never reaches the control plane (a connection left open).
    hide_agent_close: bool = False
    broken: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.accepting.set()

    def break_connection(self) -> None:
        """The connection to the agent breaks (the control plane sees 1006)."""
        self.broken.set()


class BridgedShell:
    """The control plane's end of a shell (the AgentShell protocol)."""

    def __init__(self, link: ShellLink, hop: _Hop, to_agent: asyncio.Queue[Message],
                 from_agent: asyncio.Queue[Message]) -> None:
        self.link = link
        self._hop, self._to_agent, self._from_agent = hop, to_agent, from_agent
        self._close: tuple[int, str] | None = None

    @property
    def close_code(self) -> int | None:
        return None if self._close is None else self._close[0]

    @property
    def close_reason(self) -> str:
        return "" if self._close is None else self._close[1]

    async def send(self, frame: str | bytes) -> None:
        if self._close is not None:
            return
        await self.link.accepting.wait()
        self.link.frames.append(frame)
        kind = "text" if isinstance(frame, str) else "bytes"
        await self._hop.to_agent(self._to_agent.put, {"type": "websocket.receive", kind: frame})

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self._close is None:
            getting = asyncio.ensure_future(self._from_agent.get())
            broken = asyncio.ensure_future(self.link.broken.wait())
            try:
                await asyncio.wait({getting, broken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                getting.cancel()
                broken.cancel()
            if broken.done() and not broken.cancelled():
                self._close = (1006, "")
                return
            message = getting.result()
            if message["type"] == "websocket.close":
                if self.link.hide_agent_close:
                    await asyncio.Event().wait()  # until the control plane closes
                self._close = (message.get("code", 1000), message.get("reason") or "")
                return
            data = message.get("bytes")
            chunk = data if data is not None else message["text"].encode()
            self.link.received_bytes += len(chunk)
            yield chunk

    async def close(self) -> None:
        self.link.closed = True
        if self._close is None:
            self._close = (1000, "")
        with contextlib.suppress(Exception):
            await self._hop.to_agent(self._to_agent.put, {"type": "websocket.disconnect",
                                                          "code": 1000})

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def shell_connector(app: ASGIApp, portal: BlockingPortal, shells: list[ShellLink],
                    faults: Faults) -> Callable[[str, dict[str, str]], Awaitable[BridgedShell]]:
    """The ``shell_connector`` of the control plane's agent client, onto ``app``."""

    async def connect(path_with_query: str, headers: dict[str, str]) -> BridgedShell:
        if faults.unreachable:
            raise HostUnavailableError("host agent unreachable: connection refused")
        hop = _Hop(portal, asyncio.get_running_loop())
        url = urlsplit(path_with_query)
        link = ShellLink(url.path.removeprefix("/internal/v1"), dict(parse_qsl(url.query)))
        # Read by the agent app on its loop, one frame at a time.
        to_agent: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        from_agent: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        answered: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        denial: list[Message] = []
        scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
                 "http_version": "1.1", "path": url.path, "raw_path": url.path.encode(),
                 "query_string": url.query.encode(), "root_path": "", "subprotocols": [],
                 "client": ("127.0.0.1", 1), "server": ("agent", 80),
                 "extensions": {"websocket.http.response": {}},
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}

        def answer(message: Message) -> None:
            if not answered.done():
                answered.set_result(message)

        accepted = False

        async def send(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
                hop.loop.call_soon_threadsafe(answer, message)
            elif kind.startswith("websocket.http.response"):
                denial.append(message)
                if kind == "websocket.http.response.body" and not message.get("more_body"):
                    hop.loop.call_soon_threadsafe(answer, {"type": "denied"})
            elif accepted:
                await hop.to_plane(from_agent.put(message))
            else:
                hop.loop.call_soon_threadsafe(answer, message)  # closed before accepting

        async def serve() -> None:
            await to_agent.put({"type": "websocket.connect"})
            try:
                await app(scope, to_agent.get, send)
            finally:
                # An app that ends without closing has broken the connection.
                ended = {"type": "websocket.close", "code": 1006}
                with contextlib.suppress(RuntimeError):  # the control plane's loop is gone
                    hop.loop.call_soon_threadsafe(answer, ended)
                    hop.loop.call_soon_threadsafe(_offer, from_agent, ended)

        hop.start_on_agent(serve)
        first = await answered
        if first["type"] == "denied":
            status = denial[0]["status"]
            body = b"".join(m.get("body", b"") for m in denial[1:])
            raise agent_error(status, denial_body(body))
        if first["type"] != "websocket.accept":
            raise HostUnavailableError("host agent closed the shell before accepting it")
        shells.append(link)
        return BridgedShell(link, hop, to_agent, from_agent)

    return connect


def _offer(queue: asyncio.Queue[Message], message: Message) -> None:
    if not queue.full():
        queue.put_nowait(message)
