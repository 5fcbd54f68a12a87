"""The agent's shell route (docs/agent-protocol.md, "Shell"): a WebSocket onto a sandbox PTY.

Refusals come before the upgrade, as an HTTP answer with the error envelope
(a WebSocket denial response), so the control plane can hand the same error
on to its client. After the upgrade the relay runs two loops: output (one
chunk read, one frame sent, then the next: the backpressure) and input (each
frame written fully to the terminal before the next is received).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from fastapi import APIRouter, WebSocket
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from qbox.agent.settings import AgentSecret
from qbox.agent.shell import ShellSession
from qbox.core.asgi import error_response
from qbox.core.errors import AuthenticationError, QboxError
from qbox.core.shell_protocol import BadFrame, Input, parse_frame, parse_params
from qbox.protocol.shells import CLOSE_INVALID_DATA, CLOSE_NORMAL, exit_reason

__all__ = ["shell_router"]

log = logging.getLogger("qbox.agent.shell")


def check_secret(connection: HTTPConnection, expected: bytes) -> None:
    """The host secret as a bearer token (works for WebSockets, unlike a Request dependency)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise AuthenticationError("missing or wrong host secret")


async def _send_output(websocket: WebSocket, session: ShellSession) -> None:
    """Output until it ends: one chunk read only after the last one has been sent."""
    while chunk := await session.read():
        await websocket.send_bytes(chunk)


async def _take_input(websocket: WebSocket, session: ShellSession) -> str | None:
    """Input until the client goes away (None) or sends a bad frame (its reason)."""
    while True:
        try:
            action = parse_frame(await websocket.receive())
        except BadFrame as exc:
            return str(exc)
        if action is None:
            return None
        if isinstance(action, Input):
            await session.write(action.data)
        else:
            session.resize(action.size)


async def relay(websocket: WebSocket, session: ShellSession) -> None:
    """Run the shell over an accepted WebSocket until one side ends, then end the other."""
    output = asyncio.ensure_future(_send_output(websocket, session))
    taking = asyncio.ensure_future(_take_input(websocket, session))
    exited = asyncio.ensure_future(session.wait())
    try:
        await asyncio.wait({output, taking}, return_when=asyncio.FIRST_COMPLETED)
        if output.done() and output.exception() is None:
            # Output has ended; the exit follows (a shell that closed its terminal may
            # still run: the client can still leave meanwhile).
            await asyncio.wait({exited, taking}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                await _close(websocket, CLOSE_NORMAL, exit_reason(exited.result().exit_code))
                return
        bad_frame = taking.result() if taking.done() and taking.exception() is None else None
        if bad_frame is not None:
            await _close(websocket, CLOSE_INVALID_DATA, bad_frame)
    finally:
        for task in (output, taking, exited):
            task.cancel()
        await asyncio.gather(output, taking, exited, return_exceptions=True)


async def end_session(session: ShellSession) -> None:
    """End what is left of the shell's tree, then let go of its terminal."""
    try:
        await session.terminate()
    except Exception:  # noqa: BLE001 - a background end must not go unnoticed, nor crash
        log.exception("ending the shell %s failed", session.pid)
    finally:
        session.close()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        # The client may be gone already: nobody is left to tell.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason)


def shell_router(secret: AgentSecret) -> APIRouter:
    """The shell route; it checks the host secret itself (before the upgrade)."""
    router = APIRouter()
    # Shells being ended. In the background: the client may be gone, and a
    # handler cancelled with it (server shutdown) must still end the tree.
    ending: set[asyncio.Task[None]] = set()

    @router.websocket("/sandboxes/{sandbox_id}/shell")
    async def open_shell(websocket: WebSocket, sandbox_id: str) -> None:
        try:
            check_secret(websocket, secret.value)
            params = parse_params(websocket.query_params)
            session = await websocket.app.state.agent.sandboxes.open_shell(
                sandbox_id, params.size, command=params.command, user=params.user)
        except QboxError as exc:
            await websocket.send_denial_response(error_response(exc))
            return
        try:
            await websocket.accept()
            await relay(websocket, session)
        finally:
            task = asyncio.ensure_future(end_session(session))
            ending.add(task)
            task.add_done_callback(ending.discard)

    return router
