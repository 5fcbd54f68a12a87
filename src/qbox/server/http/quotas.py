"""Per-user quotas: a user's limits and usage, admins' overrides and defaults (services/quotas.py).

``PUT`` bodies change only the quotas they name: a number sets it, ``null``
returns it to the default (for defaults: to its ``QBOX_QUOTA_*`` setting).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, StrictInt

from qbox.server.http.access import Bucket, allowed, require_admin
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import request_body
from qbox.server.http.schemas import _Body
from qbox.server.principal import Principal
from qbox.server.services.quotas import MAX_LIMIT

router = APIRouter(prefix="/v1")

class QuotaBody(_Body):
    sandboxes: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT)
    vcpus: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT)
    memory_mb: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT, alias="memoryMb")
    disk_mb: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT, alias="diskMb")
    commands: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT)
    shells: StrictInt | None = Field(default=None, ge=0, le=MAX_LIMIT)

    def changes(self) -> dict[str, int | None]:
        """Only the fields the client sent, by wire name (``null`` included)."""
        by_name = self.model_dump(by_alias=True)
        names = {(type(self).model_fields[f].alias or f) for f in self.model_fields_set}
        return {name: by_name[name] for name in names}


def _describe(changes: dict[str, int | None]) -> str:
    return " ".join(f"{name}={'default' if value is None else value}" for name, value in sorted(changes.items()))


@router.get("/quota")
async def my_quota(
    request: Request, principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    """The caller's own limits and usage."""
    return (await services_of(request).quotas.report(principal, principal.user_id)).wire()


@router.get("/users/{user_id}/quota")
async def user_quota(user_id: str, request: Request,
                     principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)) -> dict[str, Any]:
    return (await services_of(request).quotas.report(principal, user_id)).wire()


@router.put("/users/{user_id}/quota", openapi_extra=request_body(QuotaBody))
async def set_user_quota(user_id: str, request: Request,
                         principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="user.quota")
                         ) -> dict[str, Any]:
    require_admin(principal)
    changes = (await json_body(request, QuotaBody)).changes()
    describe(request, _describe(changes))
    return (await services_of(request).quotas.set_overrides(principal, user_id, changes)).wire()


def _defaults_wire(limits: dict[str, int], stored: dict[str, int | None]) -> dict[str, Any]:
    return {"limits": limits, "stored": stored}


@router.get("/quota-defaults")
async def quota_defaults(
    request: Request, principal: Principal = allowed("api-keys:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    require_admin(principal)
    return _defaults_wire(*await services_of(request).quotas.defaults())


@router.put("/quota-defaults", openapi_extra=request_body(QuotaBody))
async def set_quota_defaults(request: Request,
                             principal: Principal = allowed("api-keys:write", Bucket.REQUESTS, audit="quota.defaults")
                             ) -> dict[str, Any]:
    require_admin(principal)
    changes = (await json_body(request, QuotaBody)).changes()
    describe(request, _describe(changes))
    return _defaults_wire(*await services_of(request).quotas.set_defaults(changes))
