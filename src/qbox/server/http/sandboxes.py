"""/v1/sandboxes: spawn, list, get, kill, timeout, logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from qbox.core.errors import ValidationError
from qbox.core.states import SandboxState
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, errors, request_body
from qbox.server.http import response_models as rm
from qbox.server.http import views
from qbox.server.http.schemas import SpawnBody, TimeoutBody
from qbox.server.principal import Principal
from qbox.server.services.sandboxes import SpawnRequest

router = APIRouter(prefix="/v1/sandboxes")

_STATES = sorted(s.value for s in SandboxState)


@router.post("", status_code=201, openapi_extra=request_body(SpawnBody),
             responses=answers(201, rm.SandboxInfo, 404, 409, 503))
async def spawn(
    request: Request,
    wait: bool = False,
    wait_timeout: float = Query(default=60, alias="waitTimeoutSec", ge=0),
    principal: Principal = allowed("sandboxes:create", Bucket.REQUESTS, Bucket.SPAWNS, audit="sandbox.create"),
) -> JSONResponse:
    body = await json_body(request, SpawnBody)
    services = services_of(request)
    settings = services.ctx.settings
    if body.timeout_seconds is not None and body.timeout_seconds > settings.max_timeout_seconds:
        raise ValidationError.for_fields(
            {"timeoutSeconds": f"must be at most {settings.max_timeout_seconds}"})
    sandbox, template = await services.sandboxes.spawn_answer(
        principal,
        SpawnRequest(
            template_id=body.template_id,
            timeout_seconds=body.timeout_seconds,
            labels=body.labels,
            envs=body.envs,
            vcpus=body.vcpus,
            memory_mb=body.memory_mb,
            disk_size_mb=body.disk_size_mb,
            allow_internet_access=body.allow_internet_access,
            ports=tuple(port.to_spec() for port in body.ports),
        ),
        wait_seconds=min(wait_timeout, settings.max_wait_seconds) if wait else None,
    )
    return JSONResponse(views.sandbox(sandbox, template), status_code=201)


@router.get("", responses=answers(200, list[rm.SandboxInfo]))
async def list_sandboxes(
    request: Request,
    status: str | None = Query(default=None),
    template_id: str | None = Query(default=None, alias="templateId"),
    limit: int | None = Query(default=None, ge=1, le=10000),
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> list[dict[str, Any]]:
    if status is not None and status not in _STATES:
        raise ValidationError.for_fields({"status": f"must be one of {', '.join(_STATES)}"})
    services = services_of(request)
    rows = await services.sandboxes.find(principal, status=status, template_id=template_id,
                                         limit=limit)
    templates = await services.templates.by_id({row.template_id for row in rows})
    return [views.sandbox(row, templates.get(row.template_id)) for row in rows]


@router.get("/{sandbox_id}", responses=answers(200, rm.SandboxInfo))
async def get_sandbox(
    sandbox_id: str, request: Request, principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    services = services_of(request)
    sandbox = await services.sandboxes.get(principal, sandbox_id)
    return views.sandbox(sandbox, await services.sandboxes.template_of(sandbox))


@router.delete("/{sandbox_id}", status_code=204, responses=errors(409, 503))
async def kill_sandbox(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:delete", Bucket.REQUESTS, audit="sandbox.kill")
) -> Response:
    await services_of(request).sandboxes.kill(principal, sandbox_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/timeout", openapi_extra=request_body(TimeoutBody),
             responses=answers(200, rm.SandboxInfo, 409))
async def set_timeout(
    sandbox_id: str, request: Request,
    principal: Principal = allowed("sandboxes:create", Bucket.REQUESTS, audit="sandbox.timeout")
) -> dict[str, Any]:
    body = await json_body(request, TimeoutBody)
    describe(request, f"timeoutSeconds={body.timeout_seconds}")
    services = services_of(request)
    limit = services.ctx.settings.max_timeout_seconds
    if body.timeout_seconds > limit:
        raise ValidationError.for_fields({"timeoutSeconds": f"must be at most {limit}"})
    sandbox = await services.sandboxes.set_timeout(principal, sandbox_id, body.timeout_seconds)
    return views.sandbox(sandbox, await services.sandboxes.template_of(sandbox))


@router.get("/{sandbox_id}/logs", responses=answers(200, list[rm.SandboxEvent]))
async def sandbox_logs(
    sandbox_id: str,
    request: Request,
    tail: int | None = Query(default=None, ge=1, le=100000),
    principal: Principal = allowed("sandboxes:read", Bucket.REQUESTS),
) -> list[dict[str, Any]]:
    services = services_of(request)
    rows = await services.sandboxes.logs(principal, sandbox_id,
                                         tail or services.ctx.settings.log_tail_default)
    return [views.sandbox_event(row) for row in rows]
