"""/v1/sandboxes/{id}/shell: an interactive shell over a WebSocket (WIRE_PROTOCOL §6).

Everything that can refuse does so before the upgrade, as an HTTP answer with
the error envelope: the credentials (a bearer key, or the dashboard's session
cookie from our own origin only), the ``sandboxes:execute`` scope, the sandbox
and its template, the query, and the agent's own answer. After the upgrade the
control plane relays: client frames go to the agent verbatim, the agent's
output comes back as binary frames, and the agent's close (``1000 exit N``)
reaches the client.

Backpressure: nothing is queued without bound on the way through. Each
direction is one loop that awaits its send before it receives again: the agent's
output is read only once the previous chunk went to the client (a client that
stops reading stalls the agent's reader, and so the PTY, through the small
receive queue of the agent connection and the socket buffers), and the next
client frame is received only once the previous one was handed to the agent
(the server's own bounded queue of incoming frames then stops reading the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable

from fastapi import APIRouter, Depends, WebSocket
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocketDisconnect, WebSocketState

from qbox.core.asgi import error_response
from qbox.core.errors import QboxError
from qbox.core.shell_protocol import BadFrame, parse_frame, parse_params
from qbox.protocol.shells import ShellQuery
from qbox.server.agent_client import AgentShell
from qbox.server.http.access import Access, Bucket, credentials_principal
from qbox.server.http.auditing import Audited, describe
from qbox.server.http.deps import services_of
from qbox.server.principal import Principal

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}")
SHELL = Access("sandboxes:execute", (Bucket.REQUESTS,), Audited("sandbox.shell"), cookie=True)

_OUTPUT_FRAME = 64 * 1024
# Close codes a peer may not send; they mean the agent's connection broke.
_BROKEN = frozenset({1005, 1006, 1015})
_MAX_REASON_BYTES = 123

# What a relay direction ends with: the close to send the client, or None when it is gone.
Ending = tuple[int, str] | None


def _options(query: QueryParams) -> ShellQuery:
    params = parse_params(query)
    return ShellQuery(cols=params.size.cols, rows=params.size.rows, command=params.command, user=params.user)


def _frame_problem(text: str) -> str | None:
    """Why a client text frame is malformed, or None (the agent's rules: WIRE_PROTOCOL §6)."""
    try:
        parse_frame({"type": "websocket.receive", "text": text})
    except BadFrame as exc:
        return str(exc)
    return None


async def _to_agent(websocket: WebSocket, agent: AgentShell, max_bytes: int) -> Ending:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data, text = message.get("bytes"), message.get("text")
        frame = data if data is not None else text
        if frame is None:
            continue
        if (len(frame) if isinstance(frame, bytes) else len(frame.encode())) > max_bytes:
            return 1009, f"message over {max_bytes} bytes"
        if isinstance(frame, str) and (problem := _frame_problem(frame)):
            return 1007, problem
        await agent.send(frame)


async def _to_client(websocket: WebSocket, agent: AgentShell) -> Ending:
    try:
        async for chunk in agent:
            for start in range(0, len(chunk), _OUTPUT_FRAME):
                await websocket.send_bytes(chunk[start:start + _OUTPUT_FRAME])
    except WebSocketDisconnect:
        return None
    if agent.close_code is None or agent.close_code in _BROKEN:
        return 1011, "host agent connection lost"
    return agent.close_code, agent.close_reason


async def _relay(websocket: WebSocket, agent: AgentShell, ended: Awaitable[tuple[int, str]],
                 max_bytes: int) -> Ending:
    """Relay until the agent closes, the client goes, a frame is refused or ``ended`` fires."""
    tasks = [asyncio.ensure_future(_to_client(websocket, agent)),
             asyncio.ensure_future(_to_agent(websocket, agent, max_bytes)),
             asyncio.ensure_future(ended)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    await asyncio.wait(tasks)
    # The agent's own close (the exit status) wins over what happened at the same time.
    return next(t.result() for t in tasks if not t.cancelled())


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED \
            and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.close(code, reason.encode()[:_MAX_REASON_BYTES].decode("utf-8", "ignore"))


@router.websocket("/shell")
async def shell(websocket: WebSocket, sandbox_id: str,
                access: Principal | QboxError = Depends(SHELL.attempt)) -> None:
    services = services_of(websocket)
    try:
        if isinstance(access, QboxError):
            raise access
        principal = access
        options = _options(websocket.query_params)
        describe(websocket, f"{options.cols}x{options.rows} user={options.user or 'user'}" + (
            f" command={shlex.quote(options.command)}" if options.command is not None else ""))
        slot = await services.quotas.shell_slot(principal)
        try:
            agent = await services.sandboxes.open_shell(principal, sandbox_id, options)
        except BaseException:
            slot.release()
            raise
    except QboxError as exc:
        await websocket.send_denial_response(error_response(exc))
        return

    async def still_valid() -> bool:
        return await credentials_principal(websocket, cookie=True) is not None

    ending: Ending
    async with slot, agent:
        opened = services.shells.register(principal, sandbox_id, still_valid)
        await websocket.accept()
        if opened is None:
            ending = 1008, f"too many shells open for this api key (at most {services.ctx.settings.shell_max_per_key})"
        else:
            try:
                ending = await _relay(websocket, agent, services.shells.until_ended(opened),
                                      services.ctx.settings.shell_max_message_bytes)
            finally:
                services.shells.unregister(opened)
    if ending is not None:
        await _close(websocket, *ending)
