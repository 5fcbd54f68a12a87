"""A sandbox's environment variables on its Overview: each with its source, secret values
masked until Reveal, a set form (secret or not) and a Delete for the sandbox's own.

Reading and changing go through ``services.envs`` with the viewer's principal, under the
API's scopes (reading unmasked and every change: ``sandboxes:execute``) and audit actions,
whose entries name keys, never values. After a change an htmx form gets the section again;
a plain form is sent back to the Overview.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.errors import ValidationError
from qbox.server.http.access import require_scope
from qbox.server.http.auditing import describe
from qbox.server.http.deps import services_of
from qbox.server.web.access import Change, Page, Viewer, form_fields
from qbox.server.web.render import is_htmx, render
from qbox.server.web.sandbox_common import sandbox_of

router = APIRouter(include_in_schema=False)


async def envs_of(request: Request, viewer: Viewer, sandbox_id: str, *,
                  reveal: bool = False) -> list[dict[str, Any]]:
    found = await services_of(request).envs.find(viewer.principal, sandbox_id, mask=not reveal)
    return [{"key": e.key, "value": e.value, "source": e.source, "secret": e.secret} for e in found]


async def _section(request: Request, viewer: Viewer, sandbox_id: str, *,
                   reveal: bool = False) -> Response:
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    return render(request, "sandbox/_envs.html", viewer, sandbox=sandbox, revealed=reveal,
                  envs=await envs_of(request, viewer, sandbox_id, reveal=reveal))


async def _after_change(request: Request, viewer: Viewer, sandbox_id: str) -> Response:
    if not is_htmx(request):
        return RedirectResponse(f"/sandboxes/{sandbox_id}#envs", status_code=303)
    return await _section(request, viewer, sandbox_id)


@router.get("/sandboxes/{sandbox_id}/envs")
async def envs_section(sandbox_id: str, request: Request, reveal: bool = False,
                       viewer: Viewer = Depends(Page("sandboxes:read"))) -> Response:
    """The section (htmx), with the values shown when ``reveal``; a plain link goes to the Overview."""
    if reveal:
        require_scope(viewer.principal, "sandboxes:execute")
    if not is_htmx(request):
        return RedirectResponse(f"/sandboxes/{sandbox_id}#envs", status_code=303)
    return await _section(request, viewer, sandbox_id, reveal=reveal)


@router.post("/sandboxes/{sandbox_id}/envs")
async def set_env(sandbox_id: str, request: Request,
                  viewer: Viewer = Depends(Change("sandboxes:execute", audit="env.set"))) -> Response:
    fields = await form_fields(request)
    key = fields.get("key", "").strip()
    if not key:
        raise ValidationError.for_fields({"key": "type the variable's name"})
    describe(request, f"set keys={key[:64]}")
    await services_of(request).envs.upsert(viewer.principal, sandbox_id,
                                           {key: fields.get("value", "")},
                                           secret=fields.get("secret") == "on")
    return await _after_change(request, viewer, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/envs/delete")
async def delete_env(sandbox_id: str, request: Request,
                     viewer: Viewer = Depends(Change("sandboxes:execute", audit="env.delete"))) -> Response:
    key = (await form_fields(request)).get("key", "")
    if not key:
        raise ValidationError.for_fields({"key": "which variable?"})
    describe(request, f"delete keys={key[:64]}")
    await services_of(request).envs.delete(viewer.principal, sandbox_id, [key])
    return await _after_change(request, viewer, sandbox_id)
