"""The agent API's request bodies (docs/agent-protocol.md): camelCase on the wire.

Responses are built as plain dicts by ``app.py``; only what comes in needs
validating.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
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
    # Defaults of every command, file and code call that names none (null: "user", its home).
    user: str | None = None
    workdir: str | None = None
    # Imported when imageDigest is not in this host's store (a built template's registryRef).
    image_pull_ref: str | None = None


class ImagesGc(_Wire):
    keep: list[str] = Field(default_factory=list)


class RegistryLogin(_Wire):
    username: str
    # A SecretStr: its repr and str are masked, so it cannot leak into a log or an error.
    password: SecretStr


def _absolute(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise ValueError("must be an absolute path")
    return posixpath.normpath(path)


class CopyStep(_Wire):
    path: str
    content: str = ""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: int = Field(0o644, ge=0, le=0o7777)
    user: str = "root"

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        return _absolute(value)


class BuildStep(_Wire):
    """Exactly one of run, env, workdir, copy (``user`` goes with ``run``)."""

    run: str | None = Field(None, min_length=1)
    user: str | None = None
    env: dict[str, str] | None = None
    workdir: str | None = None
    copy_: CopyStep | None = Field(None, alias="copy")

    @field_validator("workdir")
    @classmethod
    def _workdir_absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> BuildStep:
        given = [v for v in (self.run, self.env, self.workdir, self.copy_) if v is not None]
        if len(given) != 1:
            raise ValueError("a step has exactly one of run, env, workdir, copy")
        if self.user is not None and self.run is None:
            raise ValueError("user goes with a run step")
        return self


class BuildRequest(_Wire):
    name: str = Field(min_length=1)
    ref: str = Field(min_length=1)
    credentials: RegistryLogin | None = None
    steps: list[BuildStep] = Field(default_factory=list)
    user: str = "user"
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    runtime: Literal["crun", "runsc"] = "crun"
    vcpus: int = Field(1, ge=1, le=1024)
    memory_mb: int = Field(512, ge=16)
    disk_mb: int | None = Field(None, ge=16, le=1024 * 1024)
    push: str | None = None

    @field_validator("workdir")
    @classmethod
    def _workdir_absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute(value)


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
