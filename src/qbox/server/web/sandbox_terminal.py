"""A sandbox's Shell and Code tabs: a terminal on the shell WebSocket, and code cells.

The Shell tab is a page that ``static/shell.js`` turns into an xterm.js
terminal on the API's own shell WebSocket (``/v1/sandboxes/{id}/shell``), which
takes the dashboard's session cookie from our origin only.

The Code tab keeps one code context per browser tab: ``static/code.js`` makes
it here (``POST …/code/contexts``, the API's ``code.context.create``) and runs
each cell in it (``POST …/code/run``, the API's ``code.execute``, with the same
body and limits as ``code-execute``). A run answers an HTML fragment rendered
here with everything the kernel sent escaped: text as text, images as
``data:`` URLs, and an HTML result only inside a sandboxed frame (``srcdoc``,
no scripts), never in our page.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from qbox.core.disconnects import gone, unless_disconnected
from qbox.core.errors import CodeInterpreterDisabledError, SandboxNotActiveError, UnavailableError
from qbox.core.states import SandboxState
from qbox.server.http import views
from qbox.server.http.auditing import describe
from qbox.server.http.code import ContextBody, ExecuteBody, aggregate
from qbox.server.http.deps import json_body, services_of
from qbox.server.services.code import events_of
from qbox.server.web.access import Change, Page, Viewer
from qbox.server.web.render import NO_STORE, render
from qbox.server.web.sandbox_common import TABS, sandbox_of

router = APIRouter(include_in_schema=False)

# Colours and cursor moves from the kernel (IPython colours its tracebacks): CSI and OSC sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# What a bundle is shown as, first found first: one view per bundle, as notebooks do.
_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class Shown:
    """One output as the page shows it: ``kind`` is stdout, stderr, image, html, json or text."""

    kind: str
    text: str = ""
    mime: str = ""


def _decoded(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def shown_bundle(bundle: dict[str, Any]) -> Shown | None:
    """A MIME bundle (mime → base64, as the API answers) as one view, or None when empty."""
    values = {mime: value for mime, value in bundle.items() if isinstance(value, str)}
    for mime in _IMAGES:
        raw = _decoded(values.get(mime, ""))
        if raw:
            # Re-encoded: the data URL holds nothing but base64.
            return Shown("image", base64.b64encode(raw).decode(), mime)

    def text(mime: str) -> str | None:
        if mime not in values:
            return None
        raw = _decoded(values[mime])
        return strip_ansi(raw.decode("utf-8", "replace") if raw is not None else values[mime])

    if (html := text("text/html")) is not None:
        return Shown("html", html, "text/html")
    if (data := text("application/json")) is not None:
        try:
            data = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            pass
        return Shown("json", data, "application/json")
    if (plain := text("text/plain")) is not None:
        return Shown("text", plain, "text/plain")
    return None


def cell_of(execution: dict[str, Any]) -> dict[str, Any]:
    """The API's execution body (``views.execution``) as a cell's output shows it."""
    outputs: list[Shown] = []
    for output in execution["outputs"]:
        if "display" in output:
            if (display := shown_bundle(output["display"])) is not None:
                outputs.append(display)
            continue
        stream, text = output.get("stream") or "stdout", strip_ansi(output.get("text") or "")
        if outputs and outputs[-1].kind == stream:  # one block per run of the same stream
            outputs[-1] = Shown(stream, outputs[-1].text + text)
        else:
            outputs.append(Shown(stream, text))
    error = execution["error"]
    return {
        "outputs": outputs,
        "result": shown_bundle(execution["result"]) if execution["result"] else None,
        "error": None if error is None else {
            "name": error["name"], "value": strip_ansi(error["value"]),
            "traceback": strip_ansi("\n".join(error["traceback"]))},
        "took": f"{ms} ms" if (ms := execution["executionMs"]) < 1000 else f"{ms / 1000:.1f} s",
        "timed_out": execution["timedOut"],
    }


def _ended(sandbox: dict[str, Any]) -> bool:
    return SandboxState(sandbox["status"]).terminal


@router.get("/sandboxes/{sandbox_id}/shell")
async def shell_tab(sandbox_id: str, request: Request,
                    viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    return render(request, "sandbox/shell.html", viewer, sandbox=sandbox, tab="/shell", tabs=TABS,
                  ended=_ended(sandbox))


@router.get("/sandboxes/{sandbox_id}/code")
async def code_tab(sandbox_id: str, request: Request,
                   viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    languages: list[dict[str, Any]] = []
    contexts: list[str] = []
    unavailable = None
    if not _ended(sandbox):
        code = services_of(request).code
        try:
            languages = views.languages(await code.languages(viewer.principal, sandbox_id))["languages"]
            # This tab's context may already exist (the page was reloaded): code.js reuses it then.
            contexts = [context.id for context in await code.contexts(viewer.principal, sandbox_id)]
        except (CodeInterpreterDisabledError, SandboxNotActiveError, UnavailableError) as exc:
            unavailable = exc.message
    return render(request, "sandbox/code.html", viewer, sandbox=sandbox, tab="/code", tabs=TABS,
                  ended=_ended(sandbox), languages=languages, contexts=contexts, unavailable=unavailable)


@router.post("/sandboxes/{sandbox_id}/code/contexts")
async def create_context(
    sandbox_id: str, request: Request,
    viewer: Viewer = Depends(Change("sandboxes:execute", audit="code.context.create")),
) -> Response:
    body = await json_body(request, ContextBody)
    describe(request, body.language)
    context = await services_of(request).code.create_context(viewer.principal, sandbox_id, body.to_agent())
    describe(request, f"{context.id} {body.language}")
    return JSONResponse(views.context(context), status_code=201, headers=NO_STORE)


@router.post("/sandboxes/{sandbox_id}/code/run")
async def run_cell(
    sandbox_id: str, request: Request,
    viewer: Viewer = Depends(Change("sandboxes:execute", audit="code.execute")),
) -> Response:
    body = await json_body(request, ExecuteBody)
    describe(request, f"{body.context_id or body.language or 'default'} ({len(body.code.encode())} bytes of code)")
    relayed = await services_of(request).code.execute(viewer.principal, sandbox_id, body.to_agent())
    try:
        # A browser that goes away (the Stop button) interrupts the cell, as with the API.
        execution = await unless_disconnected(request, aggregate(events_of(relayed.chunks)))
    finally:
        await relayed.close()
    if execution is None:
        return gone()
    return render(request, "sandbox/_code_result.html", viewer, cell=cell_of(views.execution(execution)))
