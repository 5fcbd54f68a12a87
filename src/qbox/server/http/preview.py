"""The preview proxy: requests to ``{port}-{sandbox}.{QBOX_PREVIEW_DOMAIN}`` relayed to that port.

``PreviewDispatcher`` sits outside everything else in the app (create_app adds it last): a
request, HTTP or WebSocket, whose Host is under the preview domain goes to the proxy and
never to the API or the dashboard, so it is neither read as JSON, capped, nor audited per
request; every other request goes on unchanged. The Host header is the only routing input
(X-Forwarded-Host and the request target's authority are not read): one Host, naming one
port of one sandbox, in origin-form (``GET http://elsewhere/ HTTP/1.1`` is a 400).

A request is looked up (``services.ports.route``: 404 when the port is not exposed), let in
or not by its visibility (preview_auth.py), then relayed through the sandbox's host agent
(``agent.ports.http`` / ``agent.ports.websocket``), which connects to the sandbox's own
address only. The body streams both ways as it comes (uploads, downloads, Server-Sent
Events); the client going away ends the upstream call. qbox's own credentials (its cookies,
a ``qbox_`` bearer key, ``qbox_signature``) are never sent on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from qbox.server.agent_client import AgentClient
from qbox.server.agent_client.ports import UpstreamSocket
from qbox.core.errors import InternalError, NotFoundError, QboxError, UnavailableError, ValidationError
from qbox.server.http.preview_auth import OUR_COOKIES, Admit, Incoming, PreviewAuth, Redirect, not_exposed, refusal
from qbox.server.services.preview import PreviewDomain, PreviewRoute
from qbox.server.services.registry import Services

log = logging.getLogger("qbox.preview")

# The raw request target, which the server's HTTP protocol keeps (server_protocol.py): uvicorn
# hands an absolute-form target to the app as if it were origin-form.
TARGET_EXTENSION = "qbox.request_target"
# Proxied requests and sockets open at once per sandbox: one preview cannot starve the others.
MAX_OPEN_PER_SANDBOX = 100
# The longest wait for an upstream's answer to begin (its body then streams for as long as it lasts).
HEAD_SECONDS = 300.0
CONNECT_SECONDS = 30.0
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
# What the client may not tell the sandbox: the proxy says these itself.
_REPLACED = frozenset({"host", "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                       "x-real-ip"})
_WEBSOCKET_OWN = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                            "sec-websocket-protocol", "sec-websocket-accept"})
# uvicorn adds its own.
_FROM_SERVER = frozenset({"date", "server"})
# Close codes a peer may not send: the connection broke.
_BROKEN = frozenset({1005, 1006, 1015})


class PreviewDispatcher:
    """ASGI: preview hosts to the proxy, everything else to ``app``."""

    def __init__(self, app: ASGIApp, domain: PreviewDomain) -> None:
        self.app = app
        self.proxy = PreviewProxy(domain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [value.decode("latin-1") for key, value in scope["headers"] if key == b"host"]
            if any(self.proxy.domain.is_preview_host(host) for host in hosts):
                await self.proxy(scope, receive, send, hosts)
                return
        await self.app(scope, receive, send)


class PreviewProxy:
    def __init__(self, domain: PreviewDomain) -> None:
        self.domain = domain
        self.open: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, hosts: list[str]) -> None:
        wants_html = any(key == b"accept" and b"text/html" in value for key, value in scope["headers"])
        try:
            incoming = self._read(scope, hosts)
            services: Services = scope["app"].state.services
            route = await services.ports.route(incoming.sandbox_id, incoming.port)
            if route is None:
                raise not_exposed(incoming.sandbox_id, incoming.port)
            decision = await PreviewAuth(services, self.domain).decide(incoming, route)
            if isinstance(decision, Redirect):
                if scope["type"] == "websocket":
                    raise QboxError("this preview is private: sign in first", status=401, code="unauthenticated")
                await _redirect(decision)(scope, receive, send)
                return
            if route.sandbox_status != "running":
                raise QboxError(f"sandbox {route.sandbox_id} is {route.sandbox_status}, not running",
                                status=502, code="sandbox_not_active",
                                details={"sandboxId": route.sandbox_id, "status": route.sandbox_status})
            agent = services.ctx.agents.for_host(route.host_id)
            with self._slot(route.sandbox_id):
                if scope["type"] == "http":
                    await _relay_http(scope, receive, send, agent, incoming, route, decision)
                else:
                    await _relay_websocket(scope, receive, send, agent, incoming, route)
        except QboxError as exc:
            if exc.status >= 500 and not exc.details.get("transient"):
                log.info("preview %s: %s %s", scope.get("path"), exc.code, exc.message)
            await _refuse(scope, receive, send, exc, wants_html)
        except Exception:  # noqa: BLE001 - the envelope, never a traceback; once begun, the connection ends
            log.exception("preview %s: unexpected error", scope.get("path"))
            with contextlib.suppress(Exception):
                await _refuse(scope, receive, send, InternalError("internal error in the preview proxy"),
                              wants_html)

    def _read(self, scope: Scope, hosts: list[str]) -> Incoming:
        if len(hosts) != 1:
            raise ValidationError.for_fields({"host": "exactly one Host header is needed"},
                                             "exactly one Host header is needed")
        raw_target = scope.get("extensions", {}).get(TARGET_EXTENSION, {}).get("target", b"/")
        if not scope["path"].startswith("/") or not raw_target.startswith(b"/"):
            raise ValidationError.for_fields({"target": "only origin-form request targets (a path)"},
                                             "absolute-form request targets are refused: send the path only")
        _, colon, listener = hosts[0].rpartition(":") if "]" not in hosts[0] else ("", "", "")
        named = self.domain.parse(hosts[0]) if not colon or listener.isdigit() else None
        if named is None:
            raise NotFoundError(f"not a preview address: a preview host is "
                                f"{{port}}-{{sandbox id}}.{self.domain.domain}")
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        scheme = str({"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"]))
        client = scope.get("client")
        return Incoming(host=hosts[0], sandbox_id=named[0], port=named[1],
                        method=scope.get("method", "GET"), scheme=scheme,
                        raw_path=raw_path.decode("latin-1"),
                        query=scope.get("query_string", b"").decode("latin-1"),
                        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                        client_ip=client[0] if client else "unknown", websocket=scope["type"] == "websocket")

    @contextlib.contextmanager
    def _slot(self, sandbox_id: str) -> Iterator[None]:
        if self.open.get(sandbox_id, 0) >= MAX_OPEN_PER_SANDBOX:
            raise UnavailableError(f"too many open preview connections to {sandbox_id} "
                                   f"(at most {MAX_OPEN_PER_SANDBOX}); retry in a moment",
                                   details={"transient": True}, retry_after=1)
        self.open[sandbox_id] = self.open.get(sandbox_id, 0) + 1
        try:
            yield
        finally:
            self.open[sandbox_id] -= 1
            if not self.open[sandbox_id]:
                del self.open[sandbox_id]


def _redirect(decision: Redirect) -> Response:
    response = RedirectResponse(decision.location, status_code=303, headers={"Cache-Control": "no-store"})
    response.raw_headers.extend((b"set-cookie", cookie.encode("latin-1")) for cookie in decision.cookies)
    return response


async def _refuse(scope: Scope, receive: Receive, send: Send, error: QboxError, wants_html: bool) -> None:
    response = refusal(error, wants_html)
    if scope["type"] == "websocket":
        await WebSocket(scope, receive, send).send_denial_response(response)
    else:
        await response(scope, receive, send)


def _without_our_cookies(value: str) -> str:
    kept = [part.strip() for part in value.split(";")
            if part.strip() and part.strip().partition("=")[0] not in OUR_COOKIES]
    return "; ".join(kept)


def upstream_headers(incoming: Incoming, route: PreviewRoute, *, websocket: bool = False) -> list[tuple[str, str]]:
    """The request's headers as the sandbox sees them: hop-by-hop ones and qbox's credentials
    gone, Host per the port's hostHeaderMode, and X-Forwarded-* as the proxy saw the request."""
    named = {token.strip().lower() for key, value in incoming.headers if key == "connection"
             for token in value.split(",")}
    dropped = HOP_BY_HOP | _REPLACED | named | (_WEBSOCKET_OWN if websocket else frozenset())
    headers: list[tuple[str, str]] = []
    for key, value in incoming.headers:
        if key in dropped:
            continue
        if key == "authorization" and value.partition(" ")[2].strip().startswith("qbox_"):
            continue
        if key == "cookie":
            value = _without_our_cookies(value)
            if not value:
                continue
        headers.append((key, value))
    host = f"localhost:{route.port}" if route.host_header_mode == "rewrite" else incoming.host
    return [("host", host), *headers, ("x-forwarded-for", incoming.client_ip),
            ("x-forwarded-proto", incoming.scheme), ("x-forwarded-host", incoming.host)]


def downstream_headers(upstream: list[tuple[str, str]], admit: Admit) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers minus hop-by-hop ones and cookies in qbox's names, plus ours."""
    named = {token.strip().lower() for key, value in upstream if key.lower() == "connection"
             for token in value.split(",")}
    headers: list[tuple[bytes, bytes]] = []
    for key, value in upstream:
        name = key.lower()
        if name in HOP_BY_HOP or name in named or name in _FROM_SERVER:
            continue
        if name == "set-cookie" and value.strip().partition("=")[0] in OUR_COOKIES:
            continue
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    headers += [(b"set-cookie", cookie.encode("latin-1")) for cookie in admit.cookies]
    return headers


class _ClientGone(Exception):
    pass


async def _relay_http(scope: Scope, receive: Receive, send: Send, agent: AgentClient,
                      incoming: Incoming, route: PreviewRoute, admit: Admit) -> None:
    """One request relayed; returns once the answer is sent or the client has gone."""
    has_body = any(key == "transfer-encoding" or (key == "content-length" and value.strip() != "0")
                   for key, value in incoming.headers)
    body_read = asyncio.Event()
    started = False

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                if chunk := message.get("body", b""):
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            body_read.set()

    async def exchange() -> None:
        nonlocal started
        try:
            async with asyncio.timeout(HEAD_SECONDS):
                upstream = await agent.ports.http(route.sandbox_id, route.port, scope["method"],
                                                  incoming.target(), upstream_headers(incoming, route),
                                                  body() if has_body else None)
        except TimeoutError:
            raise QboxError(f"port {route.port} of {route.sandbox_id} did not answer in {HEAD_SECONDS:.0f} s",
                            status=504, code="upstream_timeout") from None
        try:
            await send({"type": "http.response.start", "status": upstream.status,
                        "headers": downstream_headers(upstream.headers, admit)})
            started = True
            async for chunk in upstream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.close()

    async def client_gone() -> None:
        if has_body:
            await body_read.wait()
        while (await receive())["type"] != "http.disconnect":
            pass

    relay, watch = asyncio.ensure_future(exchange()), asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait((relay, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay, watch):
            task.cancel()
        await asyncio.wait((relay, watch))
    if relay.cancelled() or started:
        return  # the client went away, or the answer broke off after its head (the connection ends)
    error = relay.exception()
    if error is None or isinstance(error, _ClientGone):
        return
    raise error


async def _relay_websocket(scope: Scope, receive: Receive, send: Send, agent: AgentClient,
                           incoming: Incoming, route: PreviewRoute) -> None:
    websocket = WebSocket(scope, receive, send)
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            upstream = await agent.ports.websocket(route.sandbox_id, route.port, incoming.target(),
                                                   upstream_headers(incoming, route, websocket=True),
                                                   list(scope.get("subprotocols", [])))
    except TimeoutError:
        raise QboxError(f"port {route.port} of {route.sandbox_id} did not take the WebSocket in "
                        f"{CONNECT_SECONDS:.0f} s", status=504, code="upstream_timeout") from None
    async with upstream:
        await websocket.accept(subprotocol=upstream.subprotocol)
        to_client = asyncio.ensure_future(_to_client(websocket, upstream))
        to_upstream = asyncio.ensure_future(_to_upstream(websocket, upstream))
        try:
            await asyncio.wait((to_client, to_upstream), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_client, to_upstream):
                task.cancel()
            await asyncio.wait((to_client, to_upstream))
        if not to_upstream.cancelled() and to_upstream.exception() is None:
            code, reason = to_upstream.result()
            with contextlib.suppress(Exception):
                await upstream.close(code, reason)
            return
    ending = to_client.result() if not to_client.cancelled() and to_client.exception() is None \
        else (1011, "upstream connection lost")
    if websocket.application_state == WebSocketState.CONNECTED \
            and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close(*ending)


async def _to_client(websocket: WebSocket, upstream: UpstreamSocket) -> tuple[int, str]:
    """The upstream's messages to the client, each sent before the next is read."""
    async for message in upstream:
        if isinstance(message, bytes):
            await websocket.send_bytes(message)
        else:
            await websocket.send_text(message)
    code = upstream.close_code
    if code is None or code in _BROKEN:
        return 1011, "upstream connection lost"
    return code, (upstream.close_reason or "")[:120]


async def _to_upstream(websocket: WebSocket, upstream: UpstreamSocket) -> tuple[int, str]:
    """The client's messages to the upstream; the client's close code when it goes."""
    while True:
        message: Message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            code = int(message.get("code") or 1000)
            return (1000 if code in _BROKEN else code), str(message.get("reason") or "")[:120]
        data = message.get("bytes")
        if data is not None:
            await upstream.send(data)
        elif (text := message.get("text")) is not None:
            await upstream.send(text)


def install(app: Any, domain: PreviewDomain) -> None:
    """The dispatcher, outermost: added last, it wraps every other middleware."""
    app.add_middleware(PreviewDispatcher, domain=domain)
