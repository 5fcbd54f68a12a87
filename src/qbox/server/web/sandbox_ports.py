"""A sandbox's exposed ports on its Overview: each with its preview URL (Open in a new tab,
Copy), an expose form, and unexpose and new-signed-link buttons.

Every change goes through ``services.ports`` with the viewer's principal, under the API's
scope (``sandboxes:execute``) and audit action, so the audit log reads alike from either side.
After a change an htmx form gets the section again; a plain form is sent back to the Overview.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from qbox.core.asgi import field_errors
from qbox.core.errors import ValidationError
from qbox.server.http.auditing import describe
from qbox.server.http.deps import services_of
from qbox.server.http.ports import port_view
from qbox.server.http.schemas import PortBody
from qbox.server.web.access import Change, Viewer, form_fields
from qbox.server.web.render import is_htmx, render
from qbox.server.web.sandbox_common import sandbox_of

router = APIRouter(include_in_schema=False)


async def ports_of(request: Request, viewer: Viewer, sandbox_id: str) -> list[dict[str, Any]]:
    """The sandbox's ports as the API shows them, with the signed link's expiry as a time."""
    services = services_of(request)
    now = services.ctx.clock()
    shown = []
    for row in await services.ports.list(viewer.principal, sandbox_id):
        view = port_view(row, services.ports.domain, now)
        expires = view["signedUrlExpiresAt"]
        view["expiresAt"] = datetime.fromtimestamp(expires, UTC) if expires is not None else None
        shown.append(view)
    return shown


async def _after_change(request: Request, viewer: Viewer, sandbox_id: str) -> Response:
    if not is_htmx(request):
        return RedirectResponse(f"/sandboxes/{sandbox_id}#ports", status_code=303)
    sandbox = await sandbox_of(request, viewer, sandbox_id)
    return render(request, "sandbox/_ports.html", viewer, sandbox=sandbox,
                  ports=await ports_of(request, viewer, sandbox_id))


def _body(fields: dict[str, str]) -> PortBody:
    """The form as the API's body: a port, a visibility, ``force`` when ticked, a TTL if given."""
    port = fields.get("port", "").strip()
    if not port.isdigit():
        raise ValidationError.for_fields({"port": "type a port number (1–65535)"})
    given: dict[str, Any] = {"port": int(port), "visibility": fields.get("visibility", "public"),
                             "force": fields.get("force") == "on"}
    ttl = fields.get("ttl", "").strip()
    if ttl:
        if not ttl.isdigit():
            raise ValidationError.for_fields({"ttl": "the signed link's lifetime is a number of seconds"})
        given["signedUrlTtlSeconds"] = int(ttl)
    try:
        return PortBody.model_validate(given)
    except pydantic.ValidationError as exc:
        fields_, _ = field_errors(list(exc.errors()))
        raise ValidationError.for_fields(fields_) from exc


@router.post("/sandboxes/{sandbox_id}/ports")
async def expose(sandbox_id: str, request: Request,
                 viewer: Viewer = Depends(Change("sandboxes:execute", audit="port.expose"))) -> Response:
    body = _body(await form_fields(request))
    describe(request, f"port={body.port} visibility={body.visibility}")
    await services_of(request).ports.expose(viewer.principal, sandbox_id, body.to_spec())
    return await _after_change(request, viewer, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/ports/{port}/unexpose")
async def unexpose(sandbox_id: str, port: int, request: Request,
                   viewer: Viewer = Depends(Change("sandboxes:execute", audit="port.unexpose"))) -> Response:
    describe(request, f"port={port}")
    await services_of(request).ports.unexpose(viewer.principal, sandbox_id, port)
    return await _after_change(request, viewer, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/ports/{port}/signed-url")
async def new_signed_url(sandbox_id: str, port: int, request: Request,
                         viewer: Viewer = Depends(Change("sandboxes:execute", audit="port.signed_url"))) -> Response:
    describe(request, f"port={port}")
    await services_of(request).ports.mint_signed_url(viewer.principal, sandbox_id, port, None)
    return await _after_change(request, viewer, sandbox_id)
