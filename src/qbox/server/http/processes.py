"""/v1/sandboxes/{id}/exec and /commands: run things in a sandbox.

Besides the published contract (WIRE_PROTOCOL.md §4.3), qbox extensions
(docs/api.md, "Commands: streaming and stdin"): log offsets, ``follow=true``
and ``Accept: application/x-ndjson`` on /exec as NDJSON streams relayed from
the agent, and stdin for background commands.

Output is relayed as the agent streams it, never read whole here. A plain
/exec whose client goes away is cancelled (which closes the agent call, and
the agent then kills the command's tree); streamed answers stop with their
client, and their agent call is closed even if nothing was sent yet.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from qbox.core.disconnects import gone, unless_disconnected
from qbox.protocol.processes import LogOffsets
from qbox.server.agent_client import Relayed
from qbox.server.http import views
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import media, request_body
from qbox.server.http.relay import RelayResponse
from qbox.server.http.schemas import CommandBody, CommandLine, ExecBody, StdinBody
from qbox.server.principal import Principal
from qbox.server.services.slots import Slot

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}")
NDJSON = "application/x-ndjson"


def _ndjson(relayed: Relayed) -> RelayResponse:
    return RelayResponse(relayed, NDJSON)


def _json(relayed: Relayed) -> RelayResponse:
    return RelayResponse(relayed, "application/json")


def _held(response: StreamingResponse, slot: Slot) -> StreamingResponse:
    """The command's quota slot is given back when its stream ends, however it ends."""
    lines = response.body_iterator

    async def releasing() -> AsyncIterator[Any]:
        with slot:
            async for line in lines:
                yield line
    response.body_iterator = releasing()
    # A stream cancelled before its first line never runs the generator's cleanup.
    response.background = BackgroundTask(slot.release)
    return response


def _describe_command(request: Request, body: CommandLine, prefix: str = "") -> None:
    describe(request, prefix + shlex.join([body.cmd, *body.args]))


@router.post("/exec", response_model=None, openapi_extra=request_body(ExecBody),
             responses=media(200, "application/json", NDJSON))
async def exec_command(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="sandbox.exec")
) -> Response:
    body = await json_body(request, ExecBody)
    _describe_command(request, body)
    processes = services_of(request).processes
    with await services_of(request).quotas.command_slot(principal) as slot:
        if NDJSON in request.headers.get("accept", ""):
            stream = await processes.exec_stream(principal, sandbox_id, body.to_agent())
            return _held(_ndjson(stream), slot.pass_on())
        # The wait is cancelled when the client goes away (the agent then kills the command).
        answer = await unless_disconnected(request, processes.exec(principal, sandbox_id,
                                                                   body.to_agent()))
        # The agent's answer is relayed as it comes: the slot is held until it has.
        return gone() if answer is None else _held(_json(answer), slot.pass_on())


@router.post("/commands", status_code=201, openapi_extra=request_body(CommandBody))
async def start_command(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="command.start")
) -> dict[str, Any]:
    body = await json_body(request, CommandBody)
    _describe_command(request, body)
    with await services_of(request).quotas.command_slot(principal) as slot:
        started = await services_of(request).processes.start(principal, sandbox_id, body.to_agent())
        slot.keep_while_running(sandbox_id, started.pid)
    _describe_command(request, body, f"pid={started.pid} ")
    return views.command_started(started)


@router.get("/commands")
async def list_commands(
    sandbox_id: str, request: Request, principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)
) -> list[dict[str, Any]]:
    return [views.command(status)
            for status in await services_of(request).processes.find(principal, sandbox_id)]


@router.get("/commands/{pid}")
async def command_status(
    sandbox_id: str, pid: int, request: Request, principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    return views.command(await services_of(request).processes.status(principal, sandbox_id, pid))


@router.get("/commands/{pid}/logs", response_model=None,
            responses=media(200, "application/json", NDJSON))
async def command_logs(
    sandbox_id: str,
    pid: int,
    request: Request,
    offset: int | None = Query(default=None, ge=0),
    stdout_offset: int | None = Query(default=None, alias="stdoutOffset", ge=0),
    stderr_offset: int | None = Query(default=None, alias="stderrOffset", ge=0),
    follow: bool = Query(default=False),
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> StreamingResponse:
    offsets = LogOffsets(offset=offset, stdout_offset=stdout_offset, stderr_offset=stderr_offset)
    processes = services_of(request).processes
    if follow:
        return _ndjson(await processes.follow(principal, sandbox_id, pid, offsets))
    return _json(await processes.logs(principal, sandbox_id, pid, offsets))


@router.post("/commands/{pid}/stdin", status_code=204, openapi_extra=request_body(StdinBody))
async def command_stdin(
    sandbox_id: str,
    pid: int,
    request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="command.stdin"),
) -> Response:
    body = await json_body(request, StdinBody)
    describe(request, f"pid={pid} bytes={len(body.data.encode())}{' close' if body.close else ''}")
    await services_of(request).processes.write_stdin(principal, sandbox_id, pid, body.to_agent())
    return Response(status_code=204)


@router.delete("/commands/{pid}", status_code=204)
async def kill_command(
    sandbox_id: str,
    pid: int,
    request: Request,
    signal: int = Query(default=15, ge=1, le=64),
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="command.kill"),
) -> Response:
    describe(request, f"pid={pid} signal={signal}")
    await services_of(request).processes.kill(principal, sandbox_id, pid, signal)
    return Response(status_code=204)
