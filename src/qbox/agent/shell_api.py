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
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from qbox.agent.runtime.base import ConsoleSize
from qbox.agent.shell import ShellSession
from qbox.core.asgi import error_response
from qbox.core.errors import AuthenticationError, QboxError, ValidationError

log = logging.getLogger("qbox.agent.shell")

DEFAULT_SIZE = ConsoleSize(80, 24)
MAX_DIMENSION = 1000
# WebSocket close codes (RFC 6455).
CLOSE_NORMAL = 1000
CLOSE_INVALID_DATA = 1007


@dataclass(frozen=True)
class ShellParams:
    size: ConsoleSize
    command: str | None
    user: str | None


@dataclass(frozen=True)
class Input:
    data: bytes


@dataclass(frozen=True)
class Resize:
    size: ConsoleSize


class BadFrame(ValueError):
    """A client frame that is not one of the protocol's (closes with 1007)."""


def _dimension(raw: object, name: str, fields: dict[str, str]) -> int:
    value: object = raw
    if isinstance(raw, str):
        value = int(raw) if raw.strip().lstrip("-").isdigit() else None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
        fields[name] = f"must be an integer from 1 to {MAX_DIMENSION}"
        return 0
    return value


def parse_params(query: QueryParams) -> ShellParams:
    """cols/rows (default 80×24, each 1..1000), and the optional command and user."""
    fields: dict[str, str] = {}
    cols = _dimension(query.get("cols", str(DEFAULT_SIZE.cols)), "cols", fields)
    rows = _dimension(query.get("rows", str(DEFAULT_SIZE.rows)), "rows", fields)
    command = query.get("command")
    if command is not None and (not command.strip() or "\0" in command):
        fields["command"] = "must be a non-empty command line without NUL"
    if fields:
        raise ValidationError.for_fields(fields)
    return ShellParams(ConsoleSize(cols, rows), command, query.get("user") or None)


def parse_frame(message: Mapping[str, Any]) -> Input | Resize | None:
    """A received WebSocket message as an action; None for a disconnect. Raises BadFrame."""
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        return Input(message["bytes"])
    try:
        frame = json.loads(message.get("text") or "")
    except ValueError:
        raise BadFrame("a text frame must be a JSON object") from None
    if not isinstance(frame, dict):
        raise BadFrame("a text frame must be a JSON object")
    if frame.get("type") == "input" and isinstance(frame.get("data"), str):
        return Input(frame["data"].encode())
    if frame.get("type") == "resize":
        fields: dict[str, str] = {}
        cols = _dimension(frame.get("cols"), "cols", fields)
        rows = _dimension(frame.get("rows"), "rows", fields)
        if fields:
            raise BadFrame(f"resize needs cols and rows from 1 to {MAX_DIMENSION}")
        return Resize(ConsoleSize(cols, rows))
    raise BadFrame('a text frame is {"type":"input","data":…} or {"type":"resize","cols":…,"rows":…}')


def check_secret(connection: HTTPConnection, expected: bytes) -> None:
    """The host secret as a bearer token (works for WebSockets, unlike a Request dependency)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise AuthenticationError("missing or wrong host secret")


def exit_reason(exit_code: int) -> str:
    return f"exit {exit_code}"


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


def shell_router(secret: str) -> APIRouter:
    """The shell route; it checks the host secret itself (before the upgrade)."""
    router = APIRouter()
    expected = secret.encode()
    # Shells being ended. In the background: the client may be gone, and a
    # handler cancelled with it (server shutdown) must still end the tree.
    ending: set[asyncio.Task[None]] = set()

    @router.websocket("/sandboxes/{sandbox_id}/shell")
    async def open_shell(websocket: WebSocket, sandbox_id: str) -> None:
        try:
            check_secret(websocket, expected)
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
