"""A sandbox's page: its Overview, Logs and Processes tabs.

Overview shows the sandbox as ``GET /v1/sandboxes/{id}`` shows it, with its
latest lifecycle events; Logs is its event log (``GET …/logs``); Processes
lists its commands (``…/commands``), shows one's output, kills one, starts
one. While the sandbox lives, the changing parts poll a fragment of their own
every two seconds; a fragment rendered for an ended sandbox (or an ended
command) carries no trigger, so the polling stops by itself. Every read and
change goes through the API's services with the viewer's principal, under
the API's scope and audit action.

A command's output is read from the agent bounded: at most
``OUTPUT_READ_CAP`` bytes of its answer, of which the last ``OUTPUT_SHOWN``
characters of each stream are shown.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.asgi import field_errors
from qbox.core.errors import ValidationError
from qbox.core.states import SandboxState
from qbox.protocol.processes import LogOffsets
from qbox.server.agent_client import Relayed
from qbox.server.http import views
from qbox.server.http.auditing import describe
from qbox.server.http.deps import services_of
from qbox.server.http.schemas import CommandBody
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render
from qbox.server.web.sandbox_common import TABS, sandbox_of
from qbox.server.web.sandbox_envs import envs_of
from qbox.server.web.sandbox_envs import router as envs_router
from qbox.server.web.sandbox_ports import ports_of
from qbox.server.web.sandbox_ports import router as ports_router

router = APIRouter(include_in_schema=False)
# The Overview's ports section changes through its own routes.
router.include_router(ports_router)
router.include_router(envs_router)

OUTPUT_READ_CAP = 1 << 20
OUTPUT_SHOWN = 64 * 1024
LOG_LINES = 500
OVERVIEW_EVENTS = 8
# The signals the page offers: a polite stop, and a kill nothing survives.
SIGNALS = {"15": 15, "9": 9}
SHELL = "/bin/sh"


def _live(sandbox: dict[str, Any]) -> bool:
    """Whether the sandbox may still change by itself (its page keeps polling)."""
    return not SandboxState(sandbox["status"]).terminal


def _running(sandbox: dict[str, Any]) -> bool:
    return bool(sandbox["status"] == SandboxState.RUNNING)


async def _events(request: Request, viewer: Viewer, sandbox_id: str, tail: int) -> list[dict[str, Any]]:
    rows = await services_of(request).sandboxes.logs(viewer.principal, sandbox_id, tail)
    return [views.sandbox_event(row) for row in rows]


def _digest(*shown: Any) -> str:
    """What a polled fragment shows, in short. The fragment sends it back with its next poll
    (``seen``), and a poll that would show the same is answered 204: nothing is swapped, so a
    reader's selection and scroll position in it survive."""
    return hashlib.sha256(json.dumps(shown, default=str, sort_keys=True).encode()).hexdigest()[:16]


def _unchanged(request: Request, digest: str) -> bool:
    return is_htmx(request) and request.query_params.get("seen") == digest


def _tab(request: Request, viewer: Viewer, template: str, sandbox: dict[str, Any], tab: str,
         **context: Any) -> Response:
    return render(request, template, viewer, sandbox=sandbox, tab=tab, tabs=TABS, live=_live(sandbox),
                  **context)


# --- Overview -----------------------------------------------------------------------------------

@router.get("/sandboxes/{sandbox_id}")
async def overview(sandbox_id: str, request: Request,
                   viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    events = await _events(request, viewer, sandbox_id, OVERVIEW_EVENTS)
    return _tab(request, viewer, "sandbox/overview.html", sandbox, "", events=events, refreshed=False,
                ports=await ports_of(request, viewer, sandbox_id),
                envs=await envs_of(request, viewer, sandbox_id))


@router.get("/sandboxes/{sandbox_id}/overview/status")
async def overview_status(sandbox_id: str, request: Request,
                          viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    events = await _events(request, viewer, sandbox_id, OVERVIEW_EVENTS)
    return render(request, "sandbox/_overview_status.html", viewer, sandbox=sandbox, events=events,
                  live=_live(sandbox), refreshed=True)


# --- Logs ---------------------------------------------------------------------------------------

@router.get("/sandboxes/{sandbox_id}/logs")
async def logs(sandbox_id: str, request: Request,
               viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    events = await _events(request, viewer, sandbox_id, LOG_LINES)
    return _tab(request, viewer, "sandbox/logs.html", sandbox, "/logs", events=events, tail=LOG_LINES,
                digest=_digest(sandbox["status"], events))


@router.get("/sandboxes/{sandbox_id}/logs/lines")
async def log_lines(sandbox_id: str, request: Request,
                    viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    events = await _events(request, viewer, sandbox_id, LOG_LINES)
    digest = _digest(sandbox["status"], events)
    if _unchanged(request, digest):
        return Response(status_code=204)
    return render(request, "sandbox/_logs_lines.html", viewer, sandbox=sandbox, events=events,
                  live=_live(sandbox), tail=LOG_LINES, digest=digest)


# --- Processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """The end of a command's two streams, as far as a page shows them."""

    stdout: str
    stderr: str
    clipped: bool = False  # only the last part of a stream is shown
    too_large: bool = False  # the answer was over the read cap: nothing is shown


async def _read_output(relayed: Relayed) -> Output:
    received = bytearray()
    try:
        async for chunk in relayed:
            received += chunk
            if len(received) > OUTPUT_READ_CAP:
                return Output("", "", too_large=True)
    finally:
        await relayed.close()
    body = json.loads(received)
    stdout, stderr = str(body.get("stdout", "")), str(body.get("stderr", ""))
    clipped = len(stdout) > OUTPUT_SHOWN or len(stderr) > OUTPUT_SHOWN
    return Output(stdout[-OUTPUT_SHOWN:], stderr[-OUTPUT_SHOWN:], clipped=clipped)


async def _commands(request: Request, viewer: Viewer, sandbox: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The sandbox's commands, newest first; None when it is not running (the agent has none)."""
    if not _running(sandbox):
        return None
    found = await services_of(request).processes.find(viewer.principal, sandbox["id"])
    return sorted((views.command(status) for status in found), key=lambda c: c["startedAt"], reverse=True)


async def _list_fragment(request: Request, viewer: Viewer, sandbox_id: str) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    return render(request, "sandbox/_processes_list.html", viewer, sandbox=sandbox, live=_running(sandbox),
                  commands=await _commands(request, viewer, sandbox))


async def _output_of(request: Request, viewer: Viewer, sandbox_id: str, pid: int) -> dict[str, Any]:
    processes = services_of(request).processes
    command = views.command(await processes.status(viewer.principal, sandbox_id, pid))
    output = await _read_output(await processes.logs(viewer.principal, sandbox_id, pid, LogOffsets()))
    return {"command": command, "output": output, "shown_chars": OUTPUT_SHOWN, "cap": OUTPUT_READ_CAP,
            "digest": _digest(command, output)}


@router.get("/sandboxes/{sandbox_id}/processes")
async def processes(sandbox_id: str, request: Request,
                    viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    return _tab(request, viewer, "sandbox/processes.html", sandbox, "/processes",
                commands=await _commands(request, viewer, sandbox), opened=None)


@router.get("/sandboxes/{sandbox_id}/processes/list")
async def process_list(sandbox_id: str, request: Request,
                       viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    return await _list_fragment(request, viewer, sandbox_id)


@router.get("/sandboxes/{sandbox_id}/processes/{pid}/output")
async def process_output(sandbox_id: str, pid: int, request: Request,
                         viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    """The output panel (an htmx swap), or the Processes tab with it open (a plain link)."""
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    if not _running(sandbox):
        # Its processes went with it; a polling panel is told so (and stops) rather than refused.
        if is_htmx(request):
            return render(request, "sandbox/_processes_gone.html", viewer, sandbox=sandbox)
        return _tab(request, viewer, "sandbox/processes.html", sandbox, "/processes", commands=None, opened=None)
    shown = await _output_of(request, viewer, sandbox_id, pid)
    if _unchanged(request, shown["digest"]):
        return Response(status_code=204)
    if is_htmx(request):
        return render(request, "sandbox/_processes_output.html", viewer, sandbox=sandbox, **shown)
    return _tab(request, viewer, "sandbox/processes.html", sandbox, "/processes",
                commands=await _commands(request, viewer, sandbox), opened=shown)


@router.post("/sandboxes/{sandbox_id}/processes/{pid}/kill")
async def kill_process(sandbox_id: str, pid: int, request: Request,
                       viewer: Viewer = Depends(Change("sandboxes:execute", audit="command.kill"))) -> Response:
    signal = SIGNALS.get((await form_fields(request)).get("signal", "15"))
    if signal is None:
        raise ValidationError.for_fields({"signal": "must be 15 (TERM) or 9 (KILL)"})
    describe(request, f"pid={pid} signal={signal}")
    await services_of(request).processes.kill(viewer.principal, sandbox_id, pid, signal)
    if is_htmx(request):
        return await _list_fragment(request, viewer, sandbox_id)
    return RedirectResponse(f"/sandboxes/{sandbox_id}/processes", status_code=303)


@router.post("/sandboxes/{sandbox_id}/processes")
async def start_process(sandbox_id: str, request: Request,
                        viewer: Viewer = Depends(Change("sandboxes:execute", audit="command.start"))) -> Response:
    """A command line run by the sandbox's shell, in the background (``POST …/commands``)."""
    line = (await form_fields(request)).get("command", "").strip()
    if not line:
        raise ValidationError.for_fields({"command": "type a command to run"})
    try:
        body = CommandBody.model_validate({"cmd": SHELL, "args": ["-c", line]})
    except pydantic.ValidationError as exc:
        fields, _ = field_errors(list(exc.errors()))
        raise ValidationError.for_fields({"command": "; ".join(fields.values())}) from exc
    describe(request, shlex.join([body.cmd, *body.args]))
    services = services_of(request)
    with await services.quotas.command_slot(viewer.principal) as slot:
        started = await services.processes.start(viewer.principal, sandbox_id, body.to_agent())
        slot.keep_while_running(sandbox_id, started.pid)
    describe(request, f"pid={started.pid} " + shlex.join([body.cmd, *body.args]))
    if is_htmx(request):
        sandbox = await sandbox_of(request, viewer, sandbox_id)
        shown = await _output_of(request, viewer, sandbox_id, started.pid)
        # The list shows the new command at once, not at its next poll.
        return render(request, "sandbox/_processes_output.html", viewer, sandbox=sandbox, **shown,
                      headers={"HX-Trigger": "processes-changed"})
    return RedirectResponse(f"/sandboxes/{sandbox_id}/processes/{started.pid}/output", status_code=303)
