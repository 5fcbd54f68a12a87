"""/v1/sandboxes/{id}/exec and /commands: run things in a sandbox."""

from __future__ import annotations

import shlex
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from qbox.server.http.deps import json_body, note_of, require, services_of
from qbox.server.http.schemas import CommandBody, ExecBody
from qbox.server.services.keys import Principal

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}")


def _note_command(request: Request, body: CommandBody) -> None:
    if note := note_of(request):
        note.detail = shlex.join([body.cmd, *body.args])


@router.post("/exec")
async def exec_command(
    sandbox_id: str, request: Request, principal: Principal = require("sandboxes:execute", action="sandbox.exec")
) -> dict[str, Any]:
    body = await json_body(request, ExecBody)
    _note_command(request, body)
    return await services_of(request).processes.exec(principal, sandbox_id, body.to_agent())


@router.post("/commands", status_code=201)
async def start_command(
    sandbox_id: str, request: Request, principal: Principal = require("sandboxes:execute", action="command.start")
) -> dict[str, Any]:
    body = await json_body(request, CommandBody)
    _note_command(request, body)
    started = await services_of(request).processes.start(principal, sandbox_id, body.to_agent())
    if note := note_of(request):
        note.detail = f"pid={started.get('pid')} {note.detail}"
    return started


@router.get("/commands")
async def list_commands(
    sandbox_id: str, request: Request, principal: Principal = require("sandboxes:read")
) -> list[dict[str, Any]]:
    return await services_of(request).processes.find(principal, sandbox_id)


@router.get("/commands/{pid}")
async def command_status(
    sandbox_id: str, pid: int, request: Request, principal: Principal = require("sandboxes:read")
) -> dict[str, Any]:
    return await services_of(request).processes.status(principal, sandbox_id, pid)


@router.get("/commands/{pid}/logs")
async def command_logs(
    sandbox_id: str, pid: int, request: Request, principal: Principal = require("sandboxes:read")
) -> dict[str, Any]:
    return await services_of(request).processes.logs(principal, sandbox_id, pid)


@router.delete("/commands/{pid}", status_code=204)
async def kill_command(
    sandbox_id: str,
    pid: int,
    request: Request,
    signal: int = Query(default=15, ge=1, le=64),
    principal: Principal = require("sandboxes:execute", action="command.kill"),
) -> Response:
    if note := note_of(request):
        note.detail = f"pid={pid} signal={signal}"
    await services_of(request).processes.kill(principal, sandbox_id, pid, signal)
    return Response(status_code=204)
