"""The JSON objects the control plane answers with, for the OpenAPI document only.

The routes build their answers with the ``*_wire`` functions; these models
describe those objects and are declared with ``responses=answers(...)``. No
model allows fields it does not name (``additionalProperties: false``), so a
field added to a ``*_wire`` function and not here fails schemathesis'
response check in ``make test``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from qbox.core.states import SandboxState

Time = str | None  # RFC 3339 UTC with microseconds and Z, or null when it has not happened


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class VmInfo(_Answer):
    vcpus: int
    memory_mb: int


class ServiceInfo(_Answer):
    """What a template's image provides, e.g. the code interpreter."""

    name: str
    type: str
    version: str | None


class SandboxInfo(_Answer):
    id: str
    template_id: str
    status: SandboxState
    vm: VmInfo
    disk_size_mb: int
    runtime: str
    services: list[ServiceInfo]
    labels: dict[str, str]
    timeout_seconds: int | None
    host_id: str | None
    created_at: Time
    booted_at: Time
    ended_at: Time
    end_reason: str | None
    expires_at: Time
    allow_internet_access: bool
    from_pool: bool = Field(description="claimed from its template's warm pool")


class SandboxEvent(_Answer):
    time: Time
    level: str
    component: str
    message: str


class WarmPoolInfo(_Answer):
    size: int = Field(description="the pool's effective size (QBOX_WARM_POOL_DEFAULT for a built-in without one)")
    eager: bool = Field(description="pooled sandboxes start their kernel at boot")
    ready: int = Field(description="booted, waiting for a spawn")
    booting: int
    claimed: int = Field(description="live sandboxes of this template that came from its pool")


class TemplateInfo(_Answer):
    id: str
    name: str
    source: str
    status: str = Field(description="building, ready or failed")
    builtin: bool
    public: bool
    owner_id: str | None = Field(description="shown to its owner and to admins")
    image_ref: str | None
    image_digest: str | None
    size_bytes: int | None
    build_error: str | None
    services: list[ServiceInfo]
    capabilities: list[str]
    default_vcpus: int
    default_memory_mb: int
    enable_ssh: bool
    allow_internet_access: bool
    default_disk_mb: int
    runtime: str
    tags: list[str]
    start_cmd: str | None
    ready_cmd: str | None
    ready_timeout_s: int
    steps: list[dict[str, Any]]
    user: str
    workdir: str | None
    env: dict[str, str]
    host_selector: dict[str, str] = Field(description="labels a host must carry to run its sandboxes")
    registry_ref: str | None
    code_interpreter: Literal["eager", "lazy"]
    warm_pool: WarmPoolInfo
    created_at: Time
    updated_at: Time
    built_from_template_id: str | None = Field(
        default=None, description="the template whose image this one reuses (a from-git cache hit)")
    build_args: dict[str, str] | None = Field(default=None, description="dockerfile and git templates")
    build_context_id: str | None = Field(default=None, description="dockerfile templates: their uploaded context")
    git_url: str | None = None
    git_ref: str | None = None
    resolved_commit_sha: str | None = None
    dockerfile_path: str | None = None
    context_path: str | None = None
    build_key: str | None = None


class BuildContextInfo(_Answer):
    id: str
    size_bytes: int
    sha256: str


class ApiKeyInfo(_Answer):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    user_id: str
    user_email: str
    created_at: Time
    expires_at: Time
    last_used_at: Time
    revoked_at: Time
    status: str = Field(description="active, expired or revoked")


class CreatedApiKey(_Answer):
    key: ApiKeyInfo
    secret: str = Field(description="shown once; only its hash is stored")


class HostInfo(_Answer):
    id: str
    hostname: str
    status: str = Field(description="ready, draining, unhealthy or down")
    kind: str = Field(description="embedded (qbox up's own agent) or joined")
    sandbox_count: int
    used_vcpus: int
    total_vcpus: int
    used_memory_mb: int
    total_memory_mb: int
    used_disk_mb: int
    cpu_percent: float | None
    memory_used_mb: int | None
    disk_used_mb: int | None
    disk_total_mb: int | None
    max_sandboxes: int | None
    runtimes: list[str]
    templates: list[str] = Field(description="templates whose image the host holds")
    version: str
    address: str
    last_heartbeat_at: Time
    labels: dict[str, str]
    created_at: Time


class HostTokenInfo(_Answer):
    id: str
    created_at: Time
    expires_at: Time
    labels: dict[str, str]
    used_at: Time
    host_id: str | None
    revoked_at: Time
    status: str = Field(description="active, used, expired or revoked")


class CreatedHostToken(HostTokenInfo):
    token: str = Field(description="shown once; only its hash is stored")
    join_command: str


class UserInfo(_Answer):
    id: str
    email: str
    role: str
    created_at: Time
    disabled_at: Time
    status: str = Field(description="active or disabled")
    has_password: bool


class AuditEntryInfo(_Answer):
    id: int
    ts: Time
    actor_id: str | None
    actor_email: str | None
    api_key_id: str | None
    source_ip: str | None
    action: str
    target_id: str | None
    outcome: int = Field(description="the HTTP status the request ended with")
    detail: str
    hash: str


class AuditPage(_Answer):
    data: list[AuditEntryInfo]
    next_cursor: str | None


class AuditVerification(_Answer):
    ok: bool
    checked: int
    first_bad_id: int | None
    reason: str | None


class Health(_Answer):
    status: str


class SystemInfo(_Answer):
    version: str
    api_version: str
    registry_configured: bool


class Me(_Answer):
    id: str
    email: str | None
    role: str
    api_key_id: str | None
    scopes: list[str]


class LoginAnswer(_Answer):
    user: UserInfo
    csrf_token: str


class SessionInfo(_Answer):
    user_id: str
    email: str | None
    role: str
    csrf_token: str


class ClusterCaInfo(_Answer):
    """The cluster CA's certificate (public) and its fingerprint, ``sha256:<hex>``."""

    certificate_pem: str
    fingerprint: str
