"""POST /v1/templates/from-git (WIRE_PROTOCOL §4.10): a template built from a Dockerfile in a
git repository. The rules (URLs, refs, paths, the build key and its cache) are
services/git_sources.py's; the build is services/dockerfile_templates.py's.

Registered before the templates router: ``from-git`` is no template id, and a path that
does not have a template id's format is a 404 on ``/v1/templates/{template_id}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from qbox.core.ids import template_id_for

from qbox.server.http import response_models as rm
from qbox.server.http import views
from qbox.server.http.access import Bucket, allowed
from qbox.server.http.auditing import describe, note_of
from qbox.server.http.deps import json_body, services_of
from qbox.server.http.openapi import answers, request_body
from qbox.server.http.schemas import MAX_COMMAND_CHARS, TEMPLATE_NAME_RE, _Body, _optional_command, template_tags
from qbox.server.principal import Principal
from qbox.server.services.git_sources import redacted_url
from qbox.server.services.git_templates import GitTemplateRequest, GitTemplateResult
from qbox.server.services.template_access import owner_shown

router = APIRouter(prefix="/v1/templates")


class GitTemplateInfo(rm.TemplateInfo):
    """A template made from git, with what its request resolved."""

    built_from_template_id: str | None = Field(description="set on a cache hit: whose build it reuses")
    cache_hit: bool
    resolved_commit_sha: str
    build_key: str



class GitTemplateBody(_Body):
    """The published SDK sends every key; its CLI leaves out ``startCmd``/``readyCmd`` when
    unset ("" means none too). The URL, ref, paths and build args are checked by the service
    (each with its own error code), so only their types and outer bounds are here."""

    name: str = Field(pattern=TEMPLATE_NAME_RE)
    url: str = Field(max_length=8192)
    ref: str = Field(default="main", max_length=4096)
    dockerfile_path: str = Field(default="", alias="dockerfilePath", max_length=4096)
    context_path: str = Field(default=".", alias="contextPath", max_length=4096)
    build_args: dict[str, str] = Field(default_factory=dict, alias="buildArgs")
    default_memory_mb: int = Field(default=2048, alias="defaultMemoryMb", ge=1)
    default_vcpus: int = Field(default=2, alias="defaultVcpus", ge=1)
    tags: list[str] = Field(default_factory=list, max_length=64)
    start_cmd: str | None = Field(default=None, alias="startCmd", max_length=MAX_COMMAND_CHARS)
    ready_cmd: str | None = Field(default=None, alias="readyCmd", max_length=MAX_COMMAND_CHARS)
    ready_timeout_s: int = Field(default=20, alias="readyTimeoutS", ge=1, le=3600)
    enable_ssh: bool = Field(default=False, alias="enableSsh")

    @field_validator("start_cmd", "ready_cmd")
    @classmethod
    def _commands(cls, value: str | None) -> str | None:
        return _optional_command(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return template_tags(value)

    def to_request(self) -> GitTemplateRequest:
        return GitTemplateRequest(
            name=self.name, url=self.url, ref=self.ref, dockerfile_path=self.dockerfile_path,
            context_path=self.context_path, build_args=dict(self.build_args),
            default_vcpus=self.default_vcpus, default_memory_mb=self.default_memory_mb,
            tags=tuple(self.tags), start_cmd=self.start_cmd, ready_cmd=self.ready_cmd,
            ready_timeout_s=self.ready_timeout_s, enable_ssh=self.enable_ssh)


async def wire(request: Request, principal: Principal, result: GitTemplateResult) -> dict[str, object]:
    """The template as GET /v1/templates/{id} shows it, plus what the request resolved."""
    template = result.template
    pools = await services_of(request).pools.views([template])
    body = views.template(template, owner_shown(principal, template), pools[template.id])
    body.update(cacheHit=result.cache_hit, resolvedCommitSha=result.resolved_commit_sha,
                buildKey=result.build_key)
    return body


@router.post("/from-git", status_code=201, openapi_extra=request_body(GitTemplateBody),
             responses=answers(201, GitTemplateInfo, 401, 404, 409, 503))
async def create_from_git(
    request: Request,
    principal: Principal = allowed("templates:write", Bucket.REQUESTS, audit="template.create_from_git"),
) -> JSONResponse:
    """Resolve ``ref`` once, then reuse a ready build of the same commit and inputs (yours
    only: ``cacheHit``) or fetch that commit and build its Dockerfile (``building``)."""
    body = await json_body(request, GitTemplateBody)
    # Never a credential (a URL with one is refused, but the refusal is audited too), nor build args.
    describe(request, f"name={body.name} source=git url={redacted_url(body.url)} ref={body.ref[:256]!r}")
    if note := note_of(request):
        # Known before anything is stored (a build context may be committed before the template).
        note.target_id = template_id_for(body.name)
    result = await services_of(request).git_templates.create(principal, body.to_request())
    return JSONResponse(await wire(request, principal, result), status_code=201)
