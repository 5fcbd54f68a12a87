"""Liveness, version and identity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from qbox._version import __version__
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.deps import services_of
from qbox.server.http.openapi import answers
from qbox.server.http import response_models as rm
from qbox.server.principal import Principal

router = APIRouter()


@router.get("/healthz", responses=answers(200, rm.Health))
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/v1/system", responses=answers(200, rm.SystemInfo))
async def system(request: Request) -> dict[str, Any]:
    # Unauthenticated on purpose, and any bearer is ignored: clients probe it first. So it says
    # only whether builds are pushed to a registry (`qbox doctor`), never where.
    registry = services_of(request).ctx.settings.registry
    return {"version": __version__, "apiVersion": "v1", "registryConfigured": bool(registry)}


@router.get("/v1/auth/me", responses=answers(200, rm.Me))
async def me(principal: Principal = allowed(None, Bucket.REQUESTS)) -> dict[str, Any]:
    return {
        "id": principal.user_id,
        "email": principal.email,
        "role": principal.role,
        "apiKeyId": principal.api_key_id,
        "scopes": list(principal.scopes),
    }
