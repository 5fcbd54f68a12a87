"""Request models (pydantic, camelCase, unknown fields refused) and response shapes."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qbox.core.timefmt import to_wire
from qbox.server.db.tables import Sandbox, SandboxEvent, Template

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EXEC_TIMEOUT = 24 * 3600


class _Body(BaseModel):
    # Fields a client may not set (owner, host, status, …) are refused, never obeyed.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


class SpawnBody(_Body):
    template_id: str = Field(alias="templateId", min_length=1, max_length=80)
    timeout_seconds: int | None = Field(default=None, alias="timeoutSeconds", ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict)
    vcpus: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, alias="memoryMb", ge=1)
    disk_size_mb: int | None = Field(default=None, alias="diskSizeMb", ge=1)
    allow_internet_access: bool | None = Field(default=None, alias="allowInternetAccess")

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
        return value


class TimeoutBody(_Body):
    timeout_seconds: int = Field(alias="timeoutSeconds", ge=0)


class CommandBody(_Body):
    cmd: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = Field(default=None, min_length=1, max_length=64)
    # qbox extension: keep stdin open as a pipe for …/commands/{pid}/stdin.
    stdin: bool = False

    @field_validator("cmd", "cwd")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value, "value")

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        return [_no_nul(arg, "arguments") for arg in value]

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_envs(value, reserve_qbox=False)

    def to_agent(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cmd": self.cmd, "args": self.args}
        if self.env:
            body["env"] = self.env
        if self.cwd:
            body["cwd"] = self.cwd
        if self.user:
            body["user"] = self.user
        if self.stdin is True:
            body["stdin"] = True
        return body


class StdinBody(_Body):
    data: str = Field(default="", max_length=1024 * 1024)
    close: bool = False

    def to_agent(self) -> dict[str, Any]:
        return {"data": self.data, "close": self.close}


class ExecBody(CommandBody):
    stdin: str | None = None  # type: ignore[assignment]
    timeout_seconds: float | None = Field(default=None, alias="timeoutSeconds", gt=0,
                                          le=MAX_EXEC_TIMEOUT)

    def to_agent(self) -> dict[str, Any]:
        body = super().to_agent()
        if self.stdin is not None:
            body["stdin"] = self.stdin
        body["timeoutSeconds"] = self.timeout_seconds or 60
        return body


def sandbox_wire(sandbox: Sandbox, template: Template | None = None) -> dict[str, Any]:
    return {
        "id": sandbox.id,
        "templateId": sandbox.template_id,
        "status": sandbox.status,
        "vm": {"vcpus": sandbox.vcpus, "memoryMb": sandbox.memory_mb},
        "diskSizeMb": sandbox.disk_size_mb,
        "runtime": sandbox.runtime,
        "services": list(template.services) if template else [],
        "labels": dict(sandbox.labels),
        "timeoutSeconds": sandbox.timeout_seconds,
        "hostId": sandbox.host_id,
        "createdAt": to_wire(sandbox.created_at),
        "bootedAt": to_wire(sandbox.booted_at),
        "endedAt": to_wire(sandbox.ended_at),
        "endReason": sandbox.end_reason,
        "expiresAt": to_wire(sandbox.deadline_at),
        "allowInternetAccess": sandbox.allow_internet_access,
    }


def template_wire(template: Template) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "source": "image",
        "status": template.status,
        "builtin": template.builtin,
        "imageRef": template.image_ref,
        "imageDigest": template.image_digest,
        "sizeBytes": template.size_bytes,
        "buildError": template.build_error,
        "services": list(template.services),
        "capabilities": [],
        "defaultVcpus": template.default_vcpus,
        "defaultMemoryMb": template.default_memory_mb,
        "enableSsh": template.enable_ssh,
        "allowInternetAccess": template.allow_internet_access,
        "defaultDiskMb": template.default_disk_mb,
        "runtime": template.runtime,
        "tags": list(template.tags),
        "createdAt": to_wire(template.created_at),
        "updatedAt": to_wire(template.updated_at),
    }


def event_wire(event: SandboxEvent) -> dict[str, Any]:
    return {
        "time": to_wire(event.time),
        "level": event.level,
        "component": event.component,
        "message": event.message,
    }
