"""/v1/api-keys: create (the secret is shown once), list, get, revoke."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from qbox.core.timefmt import to_wire
from qbox.server.db.tables import ApiKey, User
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.http import response_models as rm
from qbox.server.http.schemas import PlainName, _Body
from qbox.server.principal import Principal
from qbox.server.services.keys import key_status

router = APIRouter(prefix="/v1/api-keys")


class CreateKeyBody(_Body):
    name: PlainName = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=32)
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    user_id: str | None = Field(default=None, alias="userId")


def key_wire(key: ApiKey, owner: User, now: datetime) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "userId": owner.id,
        "userEmail": owner.email,
        "createdAt": to_wire(key.created_at),
        "expiresAt": to_wire(key.expires_at),
        "lastUsedAt": to_wire(key.last_used_at),
        "revokedAt": to_wire(key.revoked_at),
        "status": key_status(key, now),
    }


@router.post("", status_code=201, openapi_extra=request_body(CreateKeyBody), responses=answers(201, rm.CreatedApiKey))
async def create_key(
    request: Request, principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="api_key.create")
) -> JSONResponse:
    body = await json_body(request, CreateKeyBody)
    services = services_of(request)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    key, owner, secret = await services.keys.create(principal, name=body.name, scopes=body.scopes,
                                                    expires_at=expires, user_id=body.user_id)
    return JSONResponse({"key": key_wire(key, owner, services.ctx.clock()), "secret": secret}, status_code=201)


@router.get("", responses=answers(200, list[rm.ApiKeyInfo]))
async def list_keys(request: Request, user_id: str | None = Query(default=None, alias="userId"),
                    principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)) -> list[dict[str, Any]]:
    services = services_of(request)
    now = services.ctx.clock()
    return [key_wire(k, u, now) for k, u in await services.keys.find(principal, user_id)]


@router.get("/{key_id}", responses=answers(200, rm.ApiKeyInfo))
async def get_key(key_id: str, request: Request,
                  principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)) -> dict[str, Any]:
    services = services_of(request)
    key, owner = await services.keys.get(principal, key_id)
    return key_wire(key, owner, services.ctx.clock())


@router.post("/{key_id}/revoke", responses=answers(200, rm.ApiKeyInfo))
async def revoke_key(key_id: str, request: Request,
                     principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="api_key.revoke")
                     ) -> dict[str, Any]:
    services = services_of(request)
    key, owner = await services.keys.revoke(principal, key_id)
    return key_wire(key, owner, services.ctx.clock())
