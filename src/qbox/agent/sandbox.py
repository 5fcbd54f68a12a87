"""One sandbox as the agent knows it, and its small state file.

``DATA_DIR/sandboxes/<id>/sandbox.json`` holds what a restarted agent needs
to keep serving the sandbox (its envs, limits, image) and why it stopped.
The runtime keeps its own state under ``--root``; together they let
restart adoption (``adoption.py``) find everything again. Its status changes
only through ``lifecycle.py``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from qbox.agent.spec import check_env
from qbox.core.errors import ValidationError
from qbox.core.ids import is_sandbox_id
from qbox.core.timefmt import from_wire, to_wire

STATE_FILE = "sandbox.json"

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


class SandboxStatus(StrEnum):
    CREATING = "creating"  # never on the wire: such a sandbox is not listed yet
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class SandboxParams:
    """What the control plane asks for (the wire's SandboxSpec)."""

    id: str
    image_digest: str
    envs: dict[str, str] = field(default_factory=dict)
    vcpus: int = 1
    memory_mb: int = 512
    hostname: str | None = None
    allow_internet_access: bool = True
    # The writable layer's quota; None → the agent's default.
    disk_size_mb: int | None = None
    # The runtime the sandbox runs under ("crun" or "runsc"), for its whole life.
    runtime: str = "crun"
    # The defaults of calls that name no user / cwd (None: "user", its home).
    user: str | None = None
    workdir: str | None = None
    # Imported when image_digest is not in the store (not kept: only create needs it).
    image_pull_ref: str | None = None
    # "eager": the kernel host and default kernel start at boot; "lazy": on the first
    # code call. A sandbox.json without it (an older agent's) reads as lazy, so adopting
    # it after a restart starts no kernel it did not ask for.
    code_interpreter: str = "lazy"
    # A template build's sandbox: never listed (the control plane does not know it),
    # removed by the next agent if one is left behind.
    build: bool = False

    def validate(self) -> None:
        if not is_sandbox_id(self.id):
            raise ValidationError.for_fields({"id": "must look like sb_<8-40 of [0-9a-z]>"})
        if self.hostname is not None and not _HOSTNAME_RE.match(self.hostname):
            raise ValidationError.for_fields({"hostname": "must be a valid host name label"})
        if self.vcpus < 1 or self.memory_mb < 16:
            raise ValidationError.for_fields({"vcpus/memoryMb": "vcpus ≥ 1, memoryMb ≥ 16"})
        check_env(self.envs, "envs")


@dataclass
class Sandbox:
    params: SandboxParams
    directory: Path
    created_at: datetime
    # The image's own Env (e.g. a PATH with /usr/local/bin): the base of every command's env.
    image_env: dict[str, str] = field(default_factory=dict)
    status: SandboxStatus = SandboxStatus.CREATING
    booted_at: datetime | None = None
    exit_reason: str | None = None
    # The sandbox's IPv4 address (from the network's own records, not the state file).
    address: str | None = None
    # When the agent ends it itself ("timeout"), so deadlines hold while no control plane
    # is there to; None: never. Kept in the state file: it survives an agent restart.
    deadline_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.params.id

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def hostname(self) -> str:
        return self.params.hostname or self.params.id

    def to_json(self) -> dict[str, Any]:
        p = self.params
        return {
            "id": p.id, "imageDigest": p.image_digest, "envs": p.envs, "vcpus": p.vcpus,
            "memoryMb": p.memory_mb, "hostname": p.hostname, "imageEnv": self.image_env,
            "allowInternetAccess": p.allow_internet_access, "diskSizeMb": p.disk_size_mb,
            "runtime": p.runtime, "user": p.user, "workdir": p.workdir, "build": p.build,
            "codeInterpreter": p.code_interpreter,
            "status": self.status.value, "createdAt": to_wire(self.created_at),
            "bootedAt": to_wire(self.booted_at), "exitReason": self.exit_reason,
            "deadlineAt": to_wire(self.deadline_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], directory: Path) -> Sandbox:
        params = SandboxParams(
            id=str(data["id"]), image_digest=str(data["imageDigest"]),
            envs={str(k): str(v) for k, v in (data.get("envs") or {}).items()},
            vcpus=int(data["vcpus"]), memory_mb=int(data["memoryMb"]),
            hostname=data.get("hostname"),
            allow_internet_access=bool(data.get("allowInternetAccess", True)),
            disk_size_mb=data.get("diskSizeMb"),
            # Written before runtimes could be chosen: crun's.
            runtime=str(data.get("runtime") or "crun"),
            user=data.get("user"), workdir=data.get("workdir"),
            build=bool(data.get("build", False)),
            code_interpreter=str(data.get("codeInterpreter") or "lazy"),
        )
        booted, deadline = data.get("bootedAt"), data.get("deadlineAt")
        return cls(
            params=params, directory=directory, created_at=from_wire(data["createdAt"]),
            image_env={str(k): str(v) for k, v in (data.get("imageEnv") or {}).items()},
            status=SandboxStatus(data.get("status", "stopped")),
            booted_at=from_wire(booted) if booted else None,
            exit_reason=data.get("exitReason"),
            deadline_at=from_wire(deadline) if deadline else None,
        )

    def save(self) -> None:
        # Write-then-rename: a crash leaves the old file or the new one, never half.
        # No fsync: after a host crash the sandbox is gone anyway.
        path = self.directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> Sandbox:
        return cls.from_json(json.loads((directory / STATE_FILE).read_text()), directory)
