"""Sandboxes on a host: ``/sandboxes`` (create, list) and ``/sandboxes/{id}`` (get, delete)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qbox.protocol.wire import Wire, WireTime

Runtime = Literal["crun", "runsc"]


class SandboxSpec(Wire):
    """What to boot. ``user``/``workdir`` are the defaults of every command, file and code
    call that names none (null: "user", its home)."""

    OMIT_NONE = frozenset({"hostname", "user", "workdir", "image_pull_ref", "deadline_at"})

    id: str
    image_digest: str
    envs: dict[str, str] = Field(default_factory=dict)
    vcpus: int = Field(default=1, ge=1, le=1024)
    memory_mb: int = Field(default=512, ge=16)
    # The writable layer's quota (ENOSPC beyond it); None: the agent's default (2048).
    disk_size_mb: int | None = Field(default=None, ge=16, le=1024 * 1024)
    allow_internet_access: bool = True
    hostname: str | None = None
    # crun (or the host's fallback, runc), or runsc (gVisor).
    runtime: Runtime = "crun"
    user: str | None = None
    workdir: str | None = None
    # Imported when imageDigest is not in this host's store (a built template's registryRef).
    image_pull_ref: str | None = None
    # When the agent ends the sandbox itself (reason "timeout") if no control plane did:
    # deadlines hold while the control plane is down. None: no auto-kill.
    deadline_at: WireTime | None = None
    # "eager": the kernel host and the default context start at boot; "lazy": on the
    # first code-interpreter call (an idle sandbox then costs what the runtime costs).
    code_interpreter: Literal["eager", "lazy"] = "lazy"


class SandboxClaim(Wire):
    """``POST /sandboxes/{id}/claim``: a booted (pooled) sandbox becomes a request's. ``envs``
    replace the boot envs for every later process, shell and code execution; the limits
    only shrink (above the boot values: 422)."""

    envs: dict[str, str] = Field(default_factory=dict)
    vcpus: int = Field(ge=1, le=1024)
    memory_mb: int = Field(ge=16)
    deadline_at: WireTime | None = None


class SandboxEnvs(Wire):
    """``PUT /sandboxes/{id}/envs``: the sandbox's whole env from now on (the template's, the
    user's and the platform's merged), for every later process, shell and code execution."""

    envs: dict[str, str]


class SandboxDeadline(Wire):
    """``PUT /sandboxes/{id}/deadline``: the sandbox's new deadline (its timeout changed)."""

    deadline_at: WireTime | None


class SandboxCreated(Wire):
    id: str
    status: Literal["running"] = "running"
    booted_at: WireTime | None
    # The sandbox's IPv4 address on eth0; null when the agent runs without networking.
    address: str | None


class SandboxInfo(Wire):
    OMIT_NONE = frozenset({"exit_reason"})

    id: str
    # "running" or "stopped" (a sandbox still being created is not listed).
    status: str
    address: str | None = None
    # Why a stopped sandbox ended, in the agent's shorthand ("lost: …", "oom", …).
    exit_reason: str | None = None
