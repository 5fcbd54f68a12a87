"""/v1/templates: list, get, create (build from an OCI image), rebuild, delete, build log,
set the host selector, the code interpreter and the warm pool, and (admins) make public or
private. Who may do what:
services/template_access.py.

``registryCredentials`` is write-only: it goes to the build task and nowhere
else — not the database, the audit detail, a log line or an error message.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, errors, media, request_body
from qbox.server.http import response_models as rm
from qbox.server.http import views
from qbox.server.db.tables import Template
from qbox.server.http.schemas import (
    RebuildBody,
    RegistryCredentials,
    TemplateBody,
    TemplatePatchBody,
)
from qbox.server.principal import Principal
from qbox.server.services.dockerfile_templates import DockerfileTemplateSpec
from qbox.server.services.template_access import owner_shown
from qbox.server.services.templates import NewTemplate, RegistryLogin, TemplateChange

router = APIRouter(prefix="/v1/templates")

# Copy steps carry file contents (each at most 1 MiB).
MAX_TEMPLATE_BODY = 16 * 1024 * 1024
TEXT = "text/plain; charset=utf-8"


def _login(credentials: RegistryCredentials | None) -> RegistryLogin | None:
    if credentials is None:
        return None
    return RegistryLogin(credentials.username, credentials.password.get_secret_value())


async def _wire(request: Request, principal: Principal, template: Template) -> dict[str, Any]:
    return (await _wire_all(request, principal, [template]))[0]


async def _wire_all(request: Request, principal: Principal, templates: list[Template]) -> list[dict[str, Any]]:
    pools = await services_of(request).pools.views(templates)
    return [views.template(t, owner_shown(principal, t), pools[t.id]) for t in templates]


@router.get("", responses=answers(200, list[rm.TemplateInfo]))
async def list_templates(
    request: Request,
    service: str | None = Query(default=None),
    principal: Principal = allowed("templates:read", Bucket.REQUESTS),
) -> list[dict[str, Any]]:
    return await _wire_all(request, principal, await services_of(request).templates.find(principal, service))



def template_spec(body: TemplateBody) -> NewTemplate:
    """The service's spec of a template from the API's body (the dashboard's form reads into one too)."""
    return NewTemplate(
        name=body.name, image_ref=body.image_ref or "", default_vcpus=body.default_vcpus,
        default_memory_mb=body.default_memory_mb, default_disk_mb=body.default_disk_mb,
        ready_timeout_s=body.ready_timeout_s, enable_ssh=body.enable_ssh,
        allow_internet_access=body.allow_internet_access, runtime=body.runtime, tags=body.tags,
        start_cmd=body.start_cmd, ready_cmd=body.ready_cmd,
        steps=[step.to_wire() for step in body.steps], user=body.user, workdir=body.workdir,
        env=body.env, public=body.public, host_selector=body.host_selector,
        code_interpreter=body.code_interpreter,
        warm_pool_size=None if body.warm_pool is None else body.warm_pool.size,
        warm_pool_eager=True if body.warm_pool is None else body.warm_pool.eager,
    )


def described(body: TemplateBody) -> str:
    """What the audit log says of a create (never a Dockerfile's text: only its size)."""
    if body.dockerfile is not None:
        text = (f"name={body.name} dockerfile={len(body.dockerfile)}B "
                f"buildContextId={body.build_context_id or '-'} buildArgs={len(body.build_args)}")
    else:
        text = f"name={body.name} imageRef={body.image_ref} steps={len(body.steps)}"
    return text + (" public" if body.public else "")


async def create_from_body(request: Request, principal: Principal, body: TemplateBody,
                           login: RegistryLogin | None) -> Template:
    """An image template, or one built from the body's Dockerfile (and uploaded context)."""
    spec = template_spec(body)
    services = services_of(request)
    if body.dockerfile is None:
        return await services.templates.create(principal, spec, login)
    source = DockerfileTemplateSpec(
        name=body.name, dockerfile=body.dockerfile, context=b"", build_args=dict(body.build_args),
        default_vcpus=body.default_vcpus, default_memory_mb=body.default_memory_mb,
        default_disk_mb=body.default_disk_mb, ready_timeout_s=body.ready_timeout_s,
        enable_ssh=body.enable_ssh, allow_internet_access=body.allow_internet_access,
        tags=tuple(body.tags), start_cmd=body.start_cmd, ready_cmd=body.ready_cmd)
    return await services.dockerfile_templates.create(
        principal, source, login=login, build_context_id=body.build_context_id, options=spec)


@router.post("", status_code=201, openapi_extra=request_body(TemplateBody),
             responses=answers(201, rm.TemplateInfo, 409))
async def create_template(
    request: Request, principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="template.create")
) -> JSONResponse:
    """From an image (``imageRef`` and ``steps``) or a Dockerfile (``dockerfile``, an uploaded
    ``buildContextId`` and ``buildArgs``)."""
    body = await json_body(request, TemplateBody, max_bytes=MAX_TEMPLATE_BODY)
    describe(request, described(body))
    template = await create_from_body(request, principal, body, _login(body.registry_credentials))
    return JSONResponse(await _wire(request, principal, template), status_code=201)


@router.get("/{template_id}", responses=answers(200, rm.TemplateInfo))
async def get_template(
    template_id: str, request: Request, principal: Principal = allowed("templates:read", Bucket.REQUESTS)
) -> dict[str, Any]:
    return await _wire(request, principal, await services_of(request).templates.get(principal, template_id))


@router.patch("/{template_id}", openapi_extra=request_body(TemplatePatchBody),
               responses=answers(200, rm.TemplateInfo, 409))
async def patch_template(
    template_id: str, request: Request,
    principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="template.update"),
) -> dict[str, Any]:
    """``{"public": bool}`` (admins only), ``{"hostSelector": {label: value}}``,
    ``{"codeInterpreter": "eager"|"lazy"}`` and ``{"warmPool": {"size", "eager"}}`` (the owner or
    an admin; a pool size above 0 an admin only); a field left out stays as it is."""
    body = await json_body(request, TemplatePatchBody)
    pool = body.warm_pool
    change = TemplateChange(public=body.public, host_selector=body.host_selector,
                            code_interpreter=body.code_interpreter,
                            warm_pool_size=None if pool is None else pool.size,
                            warm_pool_eager=None if pool is None else pool.eager)
    changes = [] if body.public is None else [f"public={str(body.public).lower()}"]
    if body.host_selector is not None:
        changes.append("hostSelector=" + ",".join(f"{k}={v}" for k, v in sorted(body.host_selector.items())))
    if body.code_interpreter is not None:
        changes.append(f"codeInterpreter={body.code_interpreter}")
    if change.warm_pool_size is not None:
        changes.append(f"warmPool.size={change.warm_pool_size}")
    if change.warm_pool_eager is not None:
        changes.append(f"warmPool.eager={str(change.warm_pool_eager).lower()}")
    describe(request, " ".join(changes))
    return await _wire(request, principal, await services_of(request).templates.update(
        principal, template_id, change))


@router.post("/{template_id}/rebuild", status_code=202, openapi_extra=request_body(RebuildBody, required=False),
              responses=answers(202, rm.TemplateInfo, 409))
async def rebuild_template(
    template_id: str, request: Request,
    principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="template.rebuild"),
) -> JSONResponse:
    body = await json_body(request, RebuildBody, allow_empty=True)
    template = await services_of(request).templates.rebuild(principal, template_id,
                                                            _login(body.registry_credentials))
    return JSONResponse(await _wire(request, principal, template), status_code=202)


@router.delete("/{template_id}", status_code=204, responses=errors(409))
async def delete_template(
    template_id: str, request: Request,
    principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="template.delete"),
) -> Response:
    await services_of(request).templates.delete(principal, template_id)
    return Response(status_code=204)


@router.get("/{template_id}/build-log", response_model=None, responses=media(200, TEXT))
async def build_log(
    template_id: str, request: Request, follow: bool = False,
    principal: Principal = allowed("templates:read", Bucket.REQUESTS),
) -> Response:
    templates = services_of(request).templates
    if follow:
        lines = await templates.follow_build_log(principal, template_id)
        return StreamingResponse(lines, media_type=TEXT,
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return Response(await templates.build_log(principal, template_id), media_type=TEXT)
