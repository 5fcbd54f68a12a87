"""Images and template builds: ``/images``, ``/images/{digest}``, ``/images/gc``, ``/builds``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, TypeAdapter, field_serializer, field_validator, model_validator

from qbox.protocol.wire import Wire, absolute_path


class KernelSpec(Wire):
    """A Jupyter kernelspec found in an image (what makes a template a code interpreter)."""

    name: str
    language: str
    display_name: str = ""


class ImageImport(Wire):
    # A skopeo source reference; ``name`` becomes its store tag.
    ref: str
    name: str


class ImageImported(Wire):
    digest: str
    size_bytes: int
    kernels: list[KernelSpec] = Field(default_factory=list)


class ImageInfo(ImageImported):
    unpacked: bool = False


class ImagesGc(Wire):
    keep: list[str] = Field(default_factory=list)


class ImagesCollected(Wire):
    removed: list[str] = Field(default_factory=list)
    freed_bytes: int = 0


class RegistryLogin(Wire):
    username: str
    # Masked in every repr and str, so it cannot leak into a log or an error; only the
    # body sent to the agent carries it.
    password: SecretStr

    @field_serializer("password", when_used="json")
    def _reveal_on_the_wire(self, value: SecretStr) -> str:
        return value.get_secret_value()


class CopyStep(Wire):
    path: str
    content: str = ""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: int = Field(default=0o644, ge=0, le=0o7777)
    user: str = "root"

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str) -> str:
        return absolute_path(value)


class BuildStep(Wire):
    """Exactly one of run, env, workdir, copy (``user`` goes with ``run``)."""

    OMIT_NONE = frozenset({"run", "user", "env", "workdir", "copy_"})

    run: str | None = Field(default=None, min_length=1)
    user: str | None = None
    env: dict[str, str] | None = None
    workdir: str | None = None
    copy_: CopyStep | None = Field(default=None, alias="copy")

    @field_validator("workdir")
    @classmethod
    def _workdir_absolute(cls, value: str | None) -> str | None:
        return None if value is None else absolute_path(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> BuildStep:
        given = [v for v in (self.run, self.env, self.workdir, self.copy_) if v is not None]
        if len(given) != 1:
            raise ValueError("a step has exactly one of run, env, workdir, copy")
        if self.user is not None and self.run is None:
            raise ValueError("user goes with a run step")
        return self


class DockerfileBuild(Wire):
    """A Dockerfile built with buildah (agent/images/dockerfile_build.py) instead of ``ref`` and
    steps; its context was sent first (``PUT /build-contexts/{id}``)."""

    dockerfile: str = Field(min_length=1, max_length=1024 * 1024)
    build_args: dict[str, str] = Field(default_factory=dict)
    # The context tar the agent was sent (``PUT /build-contexts/{id}``); None: an empty one.
    context_id: str | None = Field(default=None, pattern=r"^ctx_[a-z0-9]{8,60}$")
    allow_internet_access: bool = True
    timeout_seconds: int = Field(default=3600, ge=1, le=24 * 3600)


class BuildRequest(Wire):
    OMIT_NONE = frozenset({"dockerfile"})

    name: str = Field(min_length=1)
    # The base image; "" for a Dockerfile build (its FROM lines name the images).
    ref: str = ""
    credentials: RegistryLogin | None = None
    steps: list[BuildStep] = Field(default_factory=list)
    user: str = "user"
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    runtime: Literal["crun", "runsc"] = "crun"
    vcpus: int = Field(default=1, ge=1, le=1024)
    memory_mb: int = Field(default=512, ge=16)
    disk_mb: int | None = Field(default=None, ge=16, le=1024 * 1024)
    # "REG/templates/<name>:build-<n>": where the built image is pushed.
    push: str | None = None
    dockerfile: DockerfileBuild | None = None

    @field_validator("workdir")
    @classmethod
    def _workdir_absolute(cls, value: str | None) -> str | None:
        return None if value is None else absolute_path(value)

    @model_validator(mode="after")
    def _one_source(self) -> BuildRequest:
        if (self.dockerfile is None) == (not self.ref):
            raise ValueError("a build has either ref (and steps) or dockerfile")
        if self.dockerfile is not None and self.steps:
            raise ValueError("a Dockerfile build has no steps")
        return self


# --- the build's NDJSON events ------------------------------------------------

class BuildLog(Wire):
    type: Literal["log"] = "log"
    line: str


class BuildResult(Wire):
    OMIT_NONE = frozenset({"image_user", "image_workdir"})

    type: Literal["result"] = "result"
    digest: str
    size_bytes: int
    kernels: list[KernelSpec] = Field(default_factory=list)
    base_digest: str
    # "docker://…@sha256:…" when the request asked for a push.
    pushed_ref: str | None = None
    # A Dockerfile build: its image's USER and WORKDIR ("" when it sets none).
    image_user: str | None = None
    image_workdir: str | None = None


class BuildError(Wire):
    type: Literal["error"] = "error"
    code: Literal["validation_error", "build_failed", "internal_error"]
    message: str
    step: int | None = None


BuildEvent = Annotated[BuildLog | BuildResult | BuildError, Field(discriminator="type")]
BUILD_EVENT: TypeAdapter[BuildLog | BuildResult | BuildError] = TypeAdapter(BuildEvent)
