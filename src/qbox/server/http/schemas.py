"""Request models (pydantic, camelCase, unknown fields refused); the answers are views.py's."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from qbox.core.json_input import CONTROL_CHARS
from qbox.protocol.processes import CommandStart, ExecRequest, StdinWrite
from qbox.server.services.port_specs import MAX_ALLOWED_USERS as MAX_PORT_USERS
from qbox.server.services.port_specs import PortChange, PortSpec

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EXEC_TIMEOUT = 24 * 3600
TEMPLATE_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ACCOUNT_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$"
MAX_COPY_BYTES = 1024 * 1024
MAX_COMMAND_CHARS = 64 * 1024
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# More than QBOX_MAX_PORTS_PER_SANDBOX is refused by the service (507); this only bounds the body.
MAX_SPAWN_PORTS = 1000


class _Body(BaseModel):
    # Fields a client may not set (owner, host, status, …) are refused, never obeyed.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def plain_name(value: str) -> str:
    """A name (of a key, a user account, a label): no control characters, not blank."""
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# For names in request bodies: ``name: PlainName = Field(...)``.
PlainName = Annotated[str, AfterValidator(plain_name)]


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL bytes")
    return value


def _check_envs(envs: dict[str, str], *, reserve_qbox: bool) -> dict[str, str]:
    for key, value in envs.items():
        if not ENV_KEY_RE.match(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        if reserve_qbox and key.upper().startswith("QBOX_"):
            raise ValueError(f"environment variable prefix QBOX_ is reserved ({key})")
        _no_nul(value, f"value of {key}")
    return envs


# Host labels and the selectors that match them (Kubernetes-like): keys 1–63, values 0–63
# characters of A-Z a-z 0-9 . _ / -, at most 16.
HOST_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
HOST_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9._/-]{0,63}$")
MAX_HOST_LABELS = 16


def host_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_HOST_LABELS:
        raise ValueError(f"at most {MAX_HOST_LABELS} labels")
    for key, value in labels.items():
        if not HOST_LABEL_KEY_RE.fullmatch(key) or not HOST_LABEL_VALUE_RE.fullmatch(value):
            raise ValueError(f"invalid label {key!r}: keys are 1–63 and values 0–63 characters "
                             "of A-Z a-z 0-9 . _ / - (a key starts with a letter or digit)")
    return labels


class PortBody(_Body):
    """A port to expose (``POST …/ports``, or one of a spawn's ``ports``). The port's range, a
    privileged port without ``force``, the allowed users and the TTL are checked by
    ``services/port_specs.py``, which answers with their own codes."""

    port: int
    visibility: Literal["public", "private", "signed_url"] = "public"
    host_header_mode: Literal["rewrite", "preserve"] = Field(default="rewrite", alias="hostHeaderMode")
    allowed_users: list[str] | None = Field(default=None, alias="allowedUsers", max_length=MAX_PORT_USERS)
    signed_url_ttl_seconds: int | None = Field(default=None, alias="signedUrlTtlSeconds")
    force: bool = False

    def to_spec(self) -> PortSpec:
        return PortSpec(self.port, self.visibility, self.host_header_mode,
                        None if self.allowed_users is None else tuple(self.allowed_users),
                        self.signed_url_ttl_seconds, self.force)


class PortPatchBody(_Body):
    """Any subset; what is left out stays."""

    visibility: Literal["public", "private", "signed_url"] | None = None
    allowed_users: list[str] | None = Field(default=None, alias="allowedUsers", max_length=MAX_PORT_USERS)
    host_header_mode: Literal["rewrite", "preserve"] | None = Field(default=None, alias="hostHeaderMode")

    def to_change(self) -> PortChange:
        return PortChange(self.visibility, None if self.allowed_users is None else tuple(self.allowed_users),
                          self.host_header_mode)


class SignedUrlBody(_Body):
    """``{}`` (the port's last lifetime, else the default) or ``{"ttlSeconds": n}``."""

    ttl_seconds: int | None = Field(default=None, alias="ttlSeconds")


class SpawnBody(_Body):
    template_id: str = Field(alias="templateId", min_length=1, max_length=80)
    timeout_seconds: int | None = Field(default=None, alias="timeoutSeconds", ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict)
    vcpus: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, alias="memoryMb", ge=1)
    disk_size_mb: int | None = Field(default=None, alias="diskSizeMb", ge=1)
    allow_internet_access: bool | None = Field(default=None, alias="allowInternetAccess")
    # Exposed as the sandbox is written, so they route as soon as it runs.
    ports: list[PortBody] = Field(default_factory=list, max_length=MAX_SPAWN_PORTS)

    @field_validator("envs")
    @classmethod
    def _envs(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_envs(value, reserve_qbox=True)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64:
            raise ValueError("at most 64 labels")
        for key, item in value.items():
            if not key or len(key) > 128 or len(item) > 1024:
                raise ValueError("label keys are 1–128 characters, values at most 1024")
            if CONTROL_CHARS.search(key) or "\x00" in item:
                raise ValueError("label keys have no control characters, values no NUL bytes")
        return value


class TimeoutBody(_Body):
    timeout_seconds: int = Field(alias="timeoutSeconds", ge=0)


class CommandLine(_Body):
    """What every command names: the program, its arguments, where and as whom."""

    cmd: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("cmd", "cwd")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value, "value")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else plain_name(value)

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        return [_no_nul(arg, "arguments") for arg in value]

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_envs(value, reserve_qbox=False)

    def _spec(self) -> dict[str, Any]:
        # Unset and empty are the same to the agent: both are left out.
        return {"cmd": self.cmd, "args": self.args, "env": self.env or None,
                "cwd": self.cwd or None, "user": self.user or None}


class CommandBody(CommandLine):
    # qbox extension: keep stdin open as a pipe for …/commands/{pid}/stdin.
    stdin: bool = False

    def to_agent(self) -> CommandStart:
        return CommandStart(**self._spec(), stdin=self.stdin)


class StdinBody(_Body):
    data: str = Field(default="", max_length=1024 * 1024)
    close: bool = False

    def to_agent(self) -> StdinWrite:
        return StdinWrite(data=self.data, close=self.close)


class ExecBody(CommandLine):
    stdin: str | None = None
    timeout_seconds: float | None = Field(default=None, alias="timeoutSeconds", gt=0,
                                          le=MAX_EXEC_TIMEOUT)

    def to_agent(self) -> ExecRequest:
        return ExecRequest(**self._spec(), stdin=self.stdin,
                           timeout_seconds=self.timeout_seconds or 60)


def _abs_path(value: str | None) -> str | None:
    if value is None:
        return None
    _no_nul(value, "a path")
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


class RegistryCredentials(_Body):
    """Write-only: used for one pull, never stored, logged or echoed (even in errors)."""

    username: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(min_length=1, max_length=16 * 1024)


class CopySpec(_Body):
    path: str = Field(min_length=2, max_length=4096)
    content: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: int = Field(default=0o644, ge=0, le=0o7777)
    user: str = Field(default="root", pattern=ACCOUNT_RE)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str | None:
        return _abs_path(value)

    @model_validator(mode="after")
    def _size(self) -> CopySpec:
        if self.encoding == "base64":
            try:
                size = len(base64.b64decode(self.content, validate=True))
            except (binascii.Error, ValueError):
                raise ValueError("content is not valid base64") from None
        else:
            size = len(self.content.encode())
        if size > MAX_COPY_BYTES:
            raise ValueError(f"content over {MAX_COPY_BYTES} bytes")
        return self


_STEP_KINDS = ("run", "env", "workdir", "copy")


class BuildStep(_Body):
    """Exactly one of run / env / workdir / copy (``user`` goes with ``run``)."""

    run: str | None = Field(default=None, min_length=1, max_length=MAX_COMMAND_CHARS)
    user: str | None = Field(default=None, pattern=ACCOUNT_RE)
    env: dict[str, str] | None = None
    workdir: str | None = Field(default=None, max_length=4096)
    copy_: CopySpec | None = Field(default=None, alias="copy")

    @field_validator("run")
    @classmethod
    def _run(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value, "a command")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_envs(value, reserve_qbox=True)

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return _abs_path(value)

    @model_validator(mode="after")
    def _one_kind(self) -> BuildStep:
        given = [k for k in _STEP_KINDS if getattr(self, "copy_" if k == "copy" else k) is not None]
        if len(given) != 1:
            raise ValueError("a step has exactly one of run, env, workdir, copy")
        if self.user is not None and given[0] != "run":
            raise ValueError("user goes with a run step (a copy step has its own)")
        return self

    def to_wire(self) -> dict[str, Any]:
        if self.run is not None:
            return {"run": self.run, "user": self.user or "root"}
        if self.env is not None:
            return {"env": dict(self.env)}
        if self.workdir is not None:
            return {"workdir": self.workdir}
        assert self.copy_ is not None
        return {"copy": self.copy_.model_dump()}


def template_tags(value: list[str]) -> list[str]:
    if any(not tag or len(tag) > 64 or _CONTROL_RE.search(tag) for tag in value):
        raise ValueError("tags are 1–64 characters without control characters")
    return value


def _optional_command(value: str | None) -> str | None:
    """An empty command is no command (clients send "" for unset)."""
    if value is None or not value.strip():
        return None
    return _no_nul(value, "a command")


class WarmPoolBody(_Body):
    """A template's warm pool: how many sandboxes to keep booted, and whether their kernel
    starts at boot. The size's upper bound is QBOX_WARM_POOL_MAX_SIZE (checked by the service)."""

    size: int = Field(default=0, ge=0)
    eager: bool = True


class WarmPoolPatch(_Body):
    """A PATCH of the pool: a field left out stays."""

    size: int | None = Field(default=None, ge=0)
    eager: bool | None = None


CodeInterpreterMode = Literal["eager", "lazy"]


class TemplateBody(_Body):
    name: str = Field(pattern=TEMPLATE_NAME_RE)
    # Exactly one of imageRef (an image, and steps) or dockerfile (+ buildContextId, buildArgs).
    image_ref: str | None = Field(default=None, alias="imageRef", min_length=1, max_length=4096)
    dockerfile: str | None = Field(default=None, min_length=1, max_length=1024 * 1024)
    build_context_id: str | None = Field(default=None, alias="buildContextId", max_length=64)
    build_args: dict[str, str] = Field(default_factory=dict, alias="buildArgs", max_length=256)
    default_vcpus: int = Field(default=1, alias="defaultVcpus", ge=1)
    default_memory_mb: int = Field(default=512, alias="defaultMemoryMb", ge=1)
    default_disk_mb: int = Field(default=2048, alias="defaultDiskMb", ge=1)
    ready_timeout_s: int = Field(default=30, alias="readyTimeoutS", ge=1, le=3600)
    enable_ssh: bool = Field(default=False, alias="enableSsh")
    allow_internet_access: bool = Field(default=True, alias="allowInternetAccess")
    tags: list[str] = Field(default_factory=list, max_length=64)
    start_cmd: str | None = Field(default=None, alias="startCmd", max_length=MAX_COMMAND_CHARS)
    ready_cmd: str | None = Field(default=None, alias="readyCmd", max_length=MAX_COMMAND_CHARS)
    steps: list[BuildStep] = Field(default_factory=list, max_length=256)
    user: str = Field(default="user", pattern=ACCOUNT_RE)
    workdir: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    runtime: Literal["crun", "runsc"] = "crun"
    registry_credentials: RegistryCredentials | None = Field(default=None, alias="registryCredentials")
    # Admins only: every user may see and spawn it.
    public: bool = False
    # Labels a host must carry to run its sandboxes.
    host_selector: dict[str, str] = Field(default_factory=dict, alias="hostSelector")
    # "eager": the kernel starts at each sandbox's boot; "lazy": at its first code call.
    code_interpreter: CodeInterpreterMode = Field(default="lazy", alias="codeInterpreter")
    # Only an admin may ask for a size above 0.
    warm_pool: WarmPoolBody | None = Field(default=None, alias="warmPool")

    @model_validator(mode="after")
    def _one_source(self) -> TemplateBody:
        if (self.image_ref is None) == (self.dockerfile is None):
            raise ValueError("give exactly one of imageRef or dockerfile")
        if self.dockerfile is None and (self.build_context_id is not None or self.build_args):
            raise ValueError("buildContextId and buildArgs go with dockerfile")
        if self.dockerfile is not None and self.steps:
            raise ValueError("steps go with imageRef; a Dockerfile has its own")
        return self

    @field_validator("image_ref")
    @classmethod
    def _image_ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _CONTROL_RE.search(value):
            raise ValueError("must not contain control characters")
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("start_cmd", "ready_cmd")
    @classmethod
    def _commands(cls, value: str | None) -> str | None:
        return _optional_command(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return template_tags(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_envs(value, reserve_qbox=True)

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return _abs_path(value)

    @field_validator("host_selector")
    @classmethod
    def _host_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return host_labels(value)


class RebuildBody(_Body):
    registry_credentials: RegistryCredentials | None = Field(default=None, alias="registryCredentials")


class TemplatePatchBody(_Body):
    """What a PATCH changes; a field left out stays as it is."""

    # Admins only.
    public: bool | None = None
    # Replaces the whole selector ({} removes it); the owner or an admin.
    host_selector: dict[str, str] | None = Field(default=None, alias="hostSelector")
    # The owner or an admin; a warmPool.size above 0 an admin only.
    code_interpreter: CodeInterpreterMode | None = Field(default=None, alias="codeInterpreter")
    warm_pool: WarmPoolPatch | None = Field(default=None, alias="warmPool")

    @field_validator("host_selector")
    @classmethod
    def _host_selector(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else host_labels(value)

    @model_validator(mode="after")
    def _something(self) -> TemplatePatchBody:
        if (self.public is None and self.host_selector is None and self.code_interpreter is None
                and (self.warm_pool is None or (self.warm_pool.size is None and self.warm_pool.eager is None))):
            raise ValueError("give public, hostSelector, codeInterpreter or warmPool")
        return self
