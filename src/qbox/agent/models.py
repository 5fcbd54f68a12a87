"""The agent API's request bodies (docs/agent-protocol.md): camelCase on the wire.

Responses are built as plain dicts by ``app.py``; only what comes in needs
validating.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ImageImport(_Wire):
    ref: str
    name: str


class SandboxSpec(_Wire):
    id: str
    image_digest: str
    envs: dict[str, str] = Field(default_factory=dict)
    vcpus: int = Field(1, ge=1, le=1024)
    memory_mb: int = Field(512, ge=16)
    hostname: str | None = None
    allow_internet_access: bool = True
    # The writable layer's quota (ENOSPC beyond it); None → the agent's default (2048).
    disk_size_mb: int | None = Field(None, ge=16, le=1024 * 1024)
    # The template's runtime: crun (or the host's fallback, runc), or runsc (gVisor).
    runtime: Literal["crun", "runsc"] = "crun"


class ExecSpec(_Wire):
    cmd: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    # A name, or a uid (some clients send it as a JSON number).
    user: str | None = None

    @field_validator("user", mode="before")
    @classmethod
    def _uid_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def argv(self) -> list[str]:
        return [self.cmd, *self.args]


class CommandStart(ExecSpec):
    # Keep stdin open as a pipe (``…/commands/{pid}/stdin`` writes to it).
    stdin: bool = False


class StdinWrite(_Wire):
    data: str = ""
    close: bool = False


class ExecRequest(ExecSpec):
    stdin: str | None = None
    timeout_seconds: float | None = Field(None, gt=0)
