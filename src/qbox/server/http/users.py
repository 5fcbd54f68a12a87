"""/v1/users: admins add, list and disable users; passwords for dashboard logins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from qbox.core.timefmt import to_wire
from qbox.server.db.tables import User
from qbox.server.http.access import Bucket, allowed, require_admin
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.http import response_models as rm
from qbox.server.http.schemas import _Body
from qbox.server.principal import Principal

router = APIRouter(prefix="/v1/users")


class CreateUserBody(_Body):
    email: str = Field(min_length=3, max_length=320)
    role: str = "member"
    password: str | None = Field(default=None, max_length=1024)


class PasswordBody(_Body):
    password: str = Field(max_length=1024)


def user_wire(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "createdAt": to_wire(user.created_at),
        "disabledAt": to_wire(user.disabled_at),
        "status": "disabled" if user.disabled_at else "active",
        "hasPassword": user.password_hash is not None,
    }


@router.post("", status_code=201, openapi_extra=request_body(CreateUserBody), responses=answers(201, rm.UserInfo, 409))
async def create_user(request: Request,
                      principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="user.create")
                      ) -> JSONResponse:
    require_admin(principal)
    body = await json_body(request, CreateUserBody)
    user = await services_of(request).users.create(body.email, body.role, body.password)
    return JSONResponse(user_wire(user), status_code=201)


@router.get("", responses=answers(200, list[rm.UserInfo]))
async def list_users(
    request: Request, principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)
) -> list[dict[str, Any]]:
    require_admin(principal)
    return [user_wire(u) for u in await services_of(request).users.find()]


@router.get("/{user_id}", responses=answers(200, rm.UserInfo))
async def get_user(user_id: str, request: Request,
                   principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return user_wire(await services_of(request).users.get(principal, user_id))


@router.post("/{user_id}/disable", responses=answers(200, rm.UserInfo))
async def disable_user(user_id: str, request: Request,
                       principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="user.disable")
                       ) -> dict[str, Any]:
    require_admin(principal)
    return user_wire(await services_of(request).users.disable(principal, user_id))


@router.put("/{user_id}/password", status_code=204, openapi_extra=request_body(PasswordBody))
async def set_password(user_id: str, request: Request,
                       principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="user.password")
                       ) -> Response:
    body = await json_body(request, PasswordBody)
    await services_of(request).users.set_password(principal, user_id, body.password)
    return Response(status_code=204)
