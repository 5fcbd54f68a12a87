"""/v1/hosts and /v1/host-tokens (operators), and /v1/agent (hosts joining and heartbeating).

Operators read with ``hosts:read`` and change with ``hosts:write``; members
hold neither. The agent routes take no API key: a join token in the body
(once), then the host credential on every heartbeat. Heartbeats are not
audited (twelve a minute per host would drown the log); joins are.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from qbox.core.errors import AuthenticationError
from qbox.protocol.host import HeartbeatReply, HostReport, JoinReply, JoinRequest
from qbox.server.http import response_models as rm
from qbox.server.http import views
from qbox.server.http.access import Bucket, allowed, failed_authentication, host_credential
from qbox.server.http.auditing import Audited, note_of
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.http.schemas import _Body, host_labels
from qbox.server.principal import HostCredential, Principal
from qbox.server.services.cluster_ca import ensure_ca
from qbox.server.services.host_join import new_host_id

router = APIRouter(prefix="/v1/hosts")
tokens_router = APIRouter(prefix="/v1/host-tokens")
agents_router = APIRouter(prefix="/v1/agent")

class TokenBody(_Body):
    ttl_seconds: int | None = Field(default=None, alias="ttlSeconds", ge=60, le=7 * 24 * 3600)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        # The labels a template's hostSelector matches.
        return host_labels(value)


# --- hosts ---------------------------------------------------------------------


@router.get("", responses=answers(200, list[rm.HostInfo]))
async def list_hosts(request: Request, status: str | None = Query(default=None),
                     principal: Principal = allowed("hosts:read", Bucket.REQUESTS)) -> list[dict[str, Any]]:
    return [views.host(view) for view in await services_of(request).hosts.find(status)]


@router.get("/{host_id}", responses=answers(200, rm.HostInfo))
async def get_host(host_id: str, request: Request,
                   principal: Principal = allowed("hosts:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return views.host(await services_of(request).hosts.get(host_id))


@router.post("/{host_id}/drain", responses=answers(200, rm.HostInfo))
async def drain_host(host_id: str, request: Request,
                     principal: Principal = allowed("hosts:write", Bucket.REQUESTS, audit="host.drain")
                     ) -> dict[str, Any]:
    return views.host(await services_of(request).hosts.drain(host_id))


@router.post("/{host_id}/uncordon", responses=answers(200, rm.HostInfo))
async def uncordon_host(host_id: str, request: Request,
                        principal: Principal = allowed("hosts:write", Bucket.REQUESTS, audit="host.uncordon")
                        ) -> dict[str, Any]:
    return views.host(await services_of(request).hosts.uncordon(host_id))


@router.delete("/{host_id}", status_code=204, responses=answers(204, None, 409))
async def remove_host(host_id: str, request: Request,
                      principal: Principal = allowed("hosts:write", Bucket.REQUESTS, audit="host.remove")
                      ) -> Response:
    await services_of(request).hosts.remove(host_id)
    return Response(status_code=204)


# --- join tokens -------------------------------------------------------------------


@tokens_router.post("", status_code=201, openapi_extra=request_body(TokenBody, required=False),
                    responses=answers(201, rm.CreatedHostToken))
async def create_token(request: Request,
                       principal: Principal = allowed("hosts:write", Bucket.REQUESTS, audit="host_token.create")
                       ) -> JSONResponse:
    body = await json_body(request, TokenBody, allow_empty=True)
    services = services_of(request)
    token, secret = await services.joins.create_token(principal, body.ttl_seconds, body.labels)
    settings = services.ctx.settings
    url = settings.public_url or str(request.base_url).rstrip("/")
    # Replicas serving the cluster CA's certificates (QBOX_TLS=auto): the host pins that CA.
    ca_hash = (await ensure_ca(services.ctx)).fingerprint if settings.tls == "auto" and not settings.tls_cert else None
    return JSONResponse(views.created_host_token(token, secret, url, services.ctx.clock(), ca_hash),
                        status_code=201)


@tokens_router.get("", responses=answers(200, list[rm.HostTokenInfo]))
async def list_tokens(request: Request,
                      principal: Principal = allowed("hosts:read", Bucket.REQUESTS)) -> list[dict[str, Any]]:
    services = services_of(request)
    now = services.ctx.clock()
    return [views.host_token(token, now) for token in await services.joins.tokens()]


@tokens_router.delete("/{token_id}", status_code=204, responses=answers(204, None))
async def revoke_token(token_id: str, request: Request,
                       principal: Principal = allowed("hosts:write", Bucket.REQUESTS, audit="host_token.revoke")
                       ) -> Response:
    await services_of(request).joins.revoke_token(token_id)
    return Response(status_code=204)


# --- agents ---------------------------------------------------------------------------


@agents_router.post("/join", status_code=201, openapi_extra=request_body(JoinRequest),
                    responses=answers(201, JoinReply, 401),
                    dependencies=[Depends(Audited("host.join").declare)])
async def join(request: Request) -> JSONResponse:
    body = await json_body(request, JoinRequest)
    host_id = new_host_id()
    note = note_of(request)
    if note is not None:
        note.target_id = host_id
    try:
        reply = await services_of(request).joins.join(host_id, body)
    except AuthenticationError:
        failed_authentication(request)
        raise
    return JSONResponse(reply.wire(), status_code=201)


@agents_router.post("/heartbeat", openapi_extra=request_body(HostReport),
                    responses=answers(200, HeartbeatReply, 401))
async def heartbeat(request: Request, credential: HostCredential = Depends(host_credential)) -> dict[str, Any]:
    body = await json_body(request, HostReport)
    try:
        reply = await services_of(request).joins.heartbeat(credential.secret, body)
    except AuthenticationError:
        failed_authentication(request)
        raise
    return reply.wire()
