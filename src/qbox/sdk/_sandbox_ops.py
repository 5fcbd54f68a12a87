"""Sandbox and system operations, written once for sync and async (see ``_steps``); templates: ``_template_ops``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from qbox.core.errors import (
    SandboxNotActiveError,
    SandboxSpawnError,
    SandboxSpawnTimeoutError,
    TemplateNotFoundError,
    TemplateNotReadyError,
)
from qbox.sdk._api import Api
from qbox.sdk._port_ops import PortSpec
from qbox.sdk._models import (
    ClusterCa,
    ExecResult,
    Identity,
    LogEntry,
    SandboxInfo,
    SystemInfo,
    as_list,
)
from qbox.sdk._steps import Op

TEMPLATE_ID_PREFIX = "tpl_"
# The client waits this much longer than the server is asked to hold the request.
WAIT_MARGIN_SECONDS = 15


def sandbox_path(sandbox_id: str, suffix: str = "") -> str:
    return f"/v1/sandboxes/{sandbox_id}{suffix}"


def resolve_template(api: Api, template: str) -> Op[str]:
    """A template id: ``tpl_…`` passes through, anything else is looked up by name."""
    if template.startswith(TEMPLATE_ID_PREFIX):
        return template
    rows = as_list((yield from api.get("/v1/templates")), "the template list")
    for row in rows:
        if not isinstance(row, dict) or row.get("name") != template:
            continue
        template_id = str(row.get("id") or TEMPLATE_ID_PREFIX + template)
        status = row.get("status")
        if status not in (None, "ready"):
            raise TemplateNotReadyError(
                f"template {template!r} is not ready (status {status})",
                details={"templateId": template_id, "status": status},
            )
        return template_id
    raise TemplateNotFoundError(f"no template named {template!r}", details={"templateName": template})


def _spawn_outcome(info: SandboxInfo, waited_seconds: int | None) -> SandboxInfo:
    details = {"sandboxId": info.id, "status": info.status}
    if info.is_running:
        return info
    if info.is_terminal:
        reason = f" ({info.end_reason})" if info.end_reason else ""
        raise SandboxSpawnError(
            f"sandbox {info.id} ended {info.status}{reason} instead of starting",
            details={**details, "endReason": info.end_reason} if info.end_reason else details,
        )
    if waited_seconds is None:
        return info
    raise SandboxSpawnTimeoutError(
        f"sandbox {info.id} is still {info.status} after {waited_seconds}s; "
        f"reconnect later with Sandbox.connect({info.id!r})",
        details=details,
    )


def create(
    api: Api,
    *,
    template: str,
    timeout: int | None,
    metadata: Mapping[str, str] | None,
    envs: Mapping[str, str] | None,
    vcpus: int | None,
    memory_mb: int | None,
    wait_timeout: float | None,
    disk_size_mb: int | None = None,
    allow_internet_access: bool | None = None,
    ports: Sequence[PortSpec] | None = None,
) -> Op[SandboxInfo]:
    template_id = yield from resolve_template(api, template)
    body: dict[str, Any] = {"templateId": template_id}
    if timeout is not None:
        body["timeoutSeconds"] = int(timeout)
    if metadata:
        body["labels"] = {str(k): str(v) for k, v in metadata.items()}
    if envs:
        body["envs"] = {str(k): str(v) for k, v in envs.items()}
    if vcpus is not None:
        body["vcpus"] = int(vcpus)
    if memory_mb is not None:
        body["memoryMb"] = int(memory_mb)
    if disk_size_mb is not None:
        body["diskSizeMb"] = int(disk_size_mb)
    if allow_internet_access is not None:
        body["allowInternetAccess"] = bool(allow_internet_access)
    if ports:
        body["ports"] = [spec.to_wire() for spec in ports]
    wait_seconds: int | None = None
    params: dict[str, str | int | bool] | None = None
    client_timeout: float | None = None
    if wait_timeout is not None:
        wait_seconds = max(1, math.ceil(wait_timeout))
        params = {"wait": True, "waitTimeoutSec": wait_seconds}
        client_timeout = max(api.request_timeout, wait_seconds + WAIT_MARGIN_SECONDS)
    answer = yield from api.post("/v1/sandboxes", params=params, json=body, timeout=client_timeout)
    return _spawn_outcome(SandboxInfo.from_wire(answer), wait_seconds)


def get_info(api: Api, sandbox_id: str) -> Op[SandboxInfo]:
    return SandboxInfo.from_wire((yield from api.get(sandbox_path(sandbox_id))))


def connect(api: Api, sandbox_id: str) -> Op[SandboxInfo]:
    info = yield from get_info(api, sandbox_id)
    if not info.is_running:
        raise SandboxNotActiveError(
            f"sandbox {sandbox_id} is {info.status}, not running",
            details={"sandboxId": sandbox_id, "currentState": info.status},
        )
    return info


def list_sandboxes(
    api: Api, *, status: str | None, template_id: str | None, limit: int | None
) -> Op[list[SandboxInfo]]:
    if template_id is not None:
        template_id = yield from resolve_template(api, template_id)
    params = {"status": status, "templateId": template_id, "limit": limit}
    rows = as_list((yield from api.get("/v1/sandboxes", params=params)), "the sandbox list")
    return [SandboxInfo.from_wire(row) for row in rows]


def kill(api: Api, sandbox_id: str) -> Op[bool]:
    """True when this call ended the sandbox; False when it had already ended."""
    try:
        yield from api.delete(sandbox_path(sandbox_id))
    except SandboxNotActiveError:
        return False
    return True


def set_timeout(api: Api, sandbox_id: str, seconds: int) -> Op[SandboxInfo]:
    answer = yield from api.post(sandbox_path(sandbox_id, "/timeout"), json={"timeoutSeconds": int(seconds)})
    return SandboxInfo.from_wire(answer)


def logs(api: Api, sandbox_id: str, tail: int | None) -> Op[list[LogEntry]]:
    rows = yield from api.get(sandbox_path(sandbox_id, "/logs"), params={"tail": tail})
    return [LogEntry.from_wire(row) for row in as_list(rows, "the log")]


def exec_command(
    api: Api,
    sandbox_id: str,
    *,
    cmd: str,
    args: Sequence[str],
    cwd: str | None,
    envs: Mapping[str, str] | None,
    user: str | None,
    stdin: str | None,
    timeout: float | None,
) -> Op[ExecResult]:
    body: dict[str, Any] = {"cmd": cmd, "args": [str(a) for a in args]}
    if envs:
        body["env"] = dict(envs)
    if cwd:
        body["cwd"] = cwd
    if user:
        body["user"] = user
    if stdin is not None:
        body["stdin"] = stdin
    client_timeout: float | None = None
    if timeout is not None:
        body["timeoutSeconds"] = max(1, math.ceil(timeout))
        client_timeout = max(api.request_timeout, timeout + WAIT_MARGIN_SECONDS)
    answer = yield from api.post(sandbox_path(sandbox_id, "/exec"), json=body, timeout=client_timeout)
    return ExecResult.from_wire(answer)


def system_info(api: Api) -> Op[SystemInfo]:
    return SystemInfo.from_wire((yield from api.get("/v1/system", auth=False)))


def whoami(api: Api) -> Op[Identity]:
    return Identity.from_wire((yield from api.get("/v1/auth/me")))


def cluster_ca(api: Api) -> Op[ClusterCa]:
    return ClusterCa.from_wire((yield from api.get("/v1/cluster/ca")))

