"""A sandbox's ports, reached from the host (docs/agent-protocol.md, "Ports"): the routes.

``probe`` tries a TCP connect; ``http`` relays one request and streams the
answer back; ``ws`` relays a WebSocket (how: ``port_relays.py``). Each
connects to one place only: the port on the sandbox's own address, from its
network record, whatever the target or the headers say (the target must be
origin-form). The firewall lets the host open connections to a sandbox and
take their replies; a sandbox still cannot open one to the host.

The wire (``qbox.protocol.ports``): the visitor's headers and the upstream's
travel wrapped; a relayed answer says ``X-Qbox-Relayed``; the agent's own
refusals say ``X-Qbox-Agent-Error`` and carry the error envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import APIRouter, WebSocket
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from qbox.agent.port_relays import (
    RELAY_TIMEOUT,
    PortRelays,
    RelayedAnswer,
    VisitorGone,
    connect_upstream,
    open_upstream,
    reachable,
    relay_websocket,
    request_body,
)
from qbox.agent.running_sandbox import ended
from qbox.agent.sandbox import Sandbox, SandboxStatus
from qbox.agent.settings import AgentSecret
from qbox.agent.shell_api import check_secret
from qbox.core.asgi import error_response
from qbox.core.errors import (
    PortNotReachableError,
    QboxError,
    SandboxNotActiveError,
    ValidationError,
)
from qbox.protocol.ports import (
    AGENT_ERROR_HEADER,
    TARGET_HEADER,
    Headers,
    PortProbe,
    end_to_end,
    origin_form,
    unwrap,
)

__all__ = ["PortRelays", "ports_router"]


# --- what a request names ------------------------------------------------------

def checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValidationError.for_fields({"port": "must be between 1 and 65535"})
    return port


def checked_target(connection: HTTPConnection) -> str:
    """The upstream's request target: origin-form only (never a scheme, host or ``//``)."""
    target = connection.headers.get(TARGET_HEADER)
    if target is None:
        raise ValidationError.for_fields({TARGET_HEADER: "required"})
    if not origin_form(target):
        raise ValidationError.for_fields(
            {TARGET_HEADER: "must be an origin-form target (/path?query), printable ASCII"})
    return target


def upstream_address(connection: HTTPConnection, sandbox_id: str) -> tuple[Sandbox, str]:
    """The running sandbox and its own address; 404 / 409 / 502 otherwise."""
    sandbox: Sandbox = connection.app.state.agent.sandboxes.get(sandbox_id)
    if sandbox.status is SandboxStatus.STOPPED:
        raise ended(sandbox)
    if sandbox.status is not SandboxStatus.RUNNING:
        raise SandboxNotActiveError(f"sandbox {sandbox_id} is {sandbox.status.value}",
                                    details={"currentState": sandbox.status.value})
    if sandbox.address is None:
        raise PortNotReachableError(f"sandbox {sandbox_id} has no network address",
                                    details={"sandboxId": sandbox_id})
    return sandbox, sandbox.address


def request_headers(connection: HTTPConnection, port: int, *,
                    websocket: bool = False) -> Headers:
    """The visitor's end-to-end headers (unwrapped), with a ``Host``: as given, else
    ``localhost:{port}``."""
    headers = end_to_end(unwrap(connection.headers.items()), websocket=websocket)
    if not any(name == "host" for name, _ in headers):
        headers.insert(0, ("host", f"localhost:{port}"))
    return headers


def agent_error(exc: QboxError) -> Response:
    response = error_response(exc)
    response.headers[AGENT_ERROR_HEADER] = "1"
    return response


def _has_body(request: Request) -> bool:
    if "content-length" in request.headers:
        return True
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


async def relay_http(request: Request, secret: AgentSecret) -> Response:
    relays: PortRelays = request.app.state.port_relays
    sandbox_id = request.path_params["sandbox_id"]
    taken = False
    try:
        check_secret(request, secret.value)
        port = checked_port(request.path_params["port"])
        target = checked_target(request)
        sandbox, address = upstream_address(request, sandbox_id)
        relays.take(sandbox_id)
        taken = True
        has_body = _has_body(request)
        headers = request_headers(request, port)
        if "content-length" in request.headers:
            headers.append(("content-length", request.headers["content-length"]))
        upstream_request = httpx.Request(
            request.method, httpx.URL(scheme="http", host=address, port=port),
            # Bytes as the visitor sent them (ASGI gives each byte as one latin-1 character).
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            content=request_body(request.receive) if has_body else None,
            extensions={"timeout": RELAY_TIMEOUT})
        # The URL's target exactly as sent (httpx would normalise it otherwise).
        upstream_request.url = upstream_request.url.copy_with(raw_path=target.encode("ascii"))
        upstream = await open_upstream(relays, upstream_request, sandbox_id, port,
                                        replayable=not has_body)
    except QboxError as exc:
        if taken:
            relays.give_back(sandbox_id)
        return agent_error(exc)
    except VisitorGone:
        relays.give_back(sandbox_id)
        return Response(status_code=400)  # nobody is left to read it
    except BaseException:
        if taken:
            relays.give_back(sandbox_id)
        raise
    return RelayedAnswer(upstream, sandbox, request.method,
                         lambda: relays.give_back(sandbox_id))


# --- routes --------------------------------------------------------------------

class _AnyMethod:
    """An ASGI endpoint (a Starlette route calls a class instance as an app, for any
    method; a function it would wrap as GET-only)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def ports_router(secret: AgentSecret) -> APIRouter:
    """The three port routes; each checks the host secret itself (the WebSocket before
    its upgrade)."""
    router = APIRouter()

    @router.post("/sandboxes/{sandbox_id}/ports/{port}/probe")
    async def probe(sandbox_id: str, port: int, request: Request) -> PortProbe:
        check_secret(request, secret.value)
        _, address = upstream_address(request, sandbox_id)
        return PortProbe(reachable=await reachable(address, checked_port(port)))

    async def relay(scope: Scope, receive: Receive, send: Send) -> None:
        response = await relay_http(Request(scope, receive), secret)
        await response(scope, receive, send)

    # An ASGI endpoint, which a route takes with any method: the upstream decides.
    router.routes.append(Route("/sandboxes/{sandbox_id}/ports/{port:int}/http",
                               _AnyMethod(relay), include_in_schema=False))

    @router.websocket("/sandboxes/{sandbox_id}/ports/{port}/ws")
    async def relay_ws(websocket: WebSocket, sandbox_id: str, port: int) -> None:
        relays: PortRelays = websocket.app.state.port_relays
        try:
            check_secret(websocket, secret.value)
            checked_port(port)
            target = checked_target(websocket)
            sandbox, address = upstream_address(websocket, sandbox_id)
            relays.take(sandbox_id)
        except QboxError as exc:
            await websocket.send_denial_response(agent_error(exc))
            return
        try:
            try:
                upstream = await connect_upstream(
                    address, port, target, request_headers(websocket, port, websocket=True),
                    list(websocket.scope.get("subprotocols", [])), sandbox_id)
            except QboxError as exc:
                await websocket.send_denial_response(agent_error(exc))
                return
            try:
                await websocket.accept(subprotocol=upstream.subprotocol)
            except BaseException:
                await upstream.close()
                raise
            await relay_websocket(websocket, upstream, sandbox)
        finally:
            relays.give_back(sandbox_id)

    return router
