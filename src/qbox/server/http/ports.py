"""/v1/sandboxes/{id}/ports: expose a sandbox's ports at preview URLs (WIRE_PROTOCOL.md §4.9).

Reading them needs what reading the sandbox needs, changing them what running commands in it
needs; each change is audited once, never with a signed URL or a key in its detail. The
service (``services/ports.py``) decides; the preview proxy itself is ``http/preview.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from qbox.server.db.tables import SandboxPort
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, errors, request_body
from qbox.server.http.schemas import PortBody, PortPatchBody, SignedUrlBody
from qbox.server.principal import Principal
from qbox.server.services.preview import SIGNATURE_PARAM, PreviewDomain, sign

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/ports")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class PortInfo(_Answer):
    """An exposed port. ``signedUrl`` is the current signed URL of a signed_url port while it is
    valid (null otherwise); ``signedUrlExpiresAt`` is its expiry in epoch seconds."""

    port: int
    visibility: str
    host_header_mode: str
    url: str
    allowed_users: list[str] | None
    signed_url: str | None
    signed_url_expires_at: int | None


class PortList(_Answer):
    ports: list[PortInfo]


class PortProbe(_Answer):
    reachable: bool


def port_view(row: SandboxPort, domain: PreviewDomain, now: datetime) -> dict[str, Any]:
    """The Port object of §4.9."""
    url = domain.url(row.sandbox_id, row.port)
    expires: int | None = None
    signed_url: str | None = None
    if row.visibility == "signed_url" and row.signed_url_expires_at is not None:
        expires = int(row.signed_url_expires_at.timestamp())
        if expires > now.timestamp():
            signed_url = f"{url}?{SIGNATURE_PARAM}={sign(row.signing_key, row.sandbox_id, row.port, expires)}"
    return {
        "port": row.port,
        "visibility": row.visibility,
        "hostHeaderMode": row.host_header_mode,
        "url": url,
        "allowedUsers": list(row.allowed_users or ()) if row.visibility == "private" else None,
        "signedUrl": signed_url,
        "signedUrlExpiresAt": expires,
    }


def _view(request: Request, row: SandboxPort) -> dict[str, Any]:
    services = services_of(request)
    return port_view(row, services.ports.domain, services.ctx.clock())


def _described(port: int, visibility: str | None, host_header_mode: str | None,
               allowed_users: list[str] | None, ttl: int | None = None) -> str:
    parts = [f"port={port}"]
    if visibility is not None:
        parts.append(f"visibility={visibility}")
    if host_header_mode is not None:
        parts.append(f"hostHeaderMode={host_header_mode}")
    if allowed_users is not None:
        parts.append(f"allowedUsers={len(allowed_users)}")
    if ttl is not None:
        parts.append(f"ttlSeconds={ttl}")
    return " ".join(parts)


@router.post("", status_code=201, openapi_extra=request_body(PortBody),
             responses=answers(201, PortInfo, 409, 507))
async def expose_port(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="port.expose"),
) -> dict[str, Any]:
    body = await json_body(request, PortBody)
    describe(request, _described(body.port, body.visibility, body.host_header_mode, body.allowed_users,
                                 body.signed_url_ttl_seconds))
    row = await services_of(request).ports.expose(principal, sandbox_id, body.to_spec())
    return _view(request, row)


@router.get("", responses=answers(200, PortList))
async def list_ports(
    sandbox_id: str, request: Request, principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> dict[str, Any]:
    rows = await services_of(request).ports.list(principal, sandbox_id)
    return {"ports": [_view(request, row) for row in rows]}


@router.get("/{port}", responses=answers(200, PortInfo))
async def get_port(
    sandbox_id: str, port: int, request: Request,
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> dict[str, Any]:
    return _view(request, await services_of(request).ports.get(principal, sandbox_id, port))


@router.patch("/{port}", openapi_extra=request_body(PortPatchBody), responses=answers(200, PortInfo, 409))
async def update_port(
    sandbox_id: str, port: int, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="port.update"),
) -> dict[str, Any]:
    body = await json_body(request, PortPatchBody)
    describe(request, _described(port, body.visibility, body.host_header_mode, body.allowed_users))
    row = await services_of(request).ports.update(principal, sandbox_id, port, body.to_change())
    return _view(request, row)


@router.delete("/{port}", status_code=204, responses=errors())
async def unexpose_port(
    sandbox_id: str, port: int, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="port.unexpose"),
) -> Response:
    describe(request, f"port={port}")
    await services_of(request).ports.unexpose(principal, sandbox_id, port)
    return Response(status_code=204)


@router.post("/{port}/signed-url", openapi_extra=request_body(SignedUrlBody, required=False),
             responses=answers(200, PortInfo, 409))
async def mint_signed_url(
    sandbox_id: str, port: int, request: Request,
    principal: Principal = allowed("sandboxes:execute", Bucket.REQUESTS, audit="port.signed_url"),
) -> dict[str, Any]:
    body = await json_body(request, SignedUrlBody, allow_empty=True)
    describe(request, _described(port, None, None, None, body.ttl_seconds))
    row = await services_of(request).ports.mint_signed_url(principal, sandbox_id, port, body.ttl_seconds)
    return _view(request, row)


@router.post("/{port}/probe", responses=answers(200, PortProbe, 409))
async def probe_port(
    sandbox_id: str, port: int, request: Request,
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS, audit="port.probe"),
) -> dict[str, Any]:
    describe(request, f"port={port}")
    return {"reachable": await services_of(request).ports.probe(principal, sandbox_id, port)}
