"""The public API's response bodies (docs/api.md, WIRE_PROTOCOL.md), built here and only here.

From database rows and from the typed answers of host agents
(``qbox.protocol``): what an agent says is never relayed as the public body
itself, so the two contracts can move apart without a client noticing.
Streamed answers (an /exec's output, logs, follows, code events) are relayed
as the agent writes them; their shapes are the agent protocol's, which the
public contract shares.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from qbox.core.timefmt import to_wire
from qbox.protocol.code import CodeError, CodeOutput, Context, Languages
from qbox.protocol.files import FileEntry, FileStat
from qbox.protocol.processes import CommandStarted, CommandStatus
from qbox.server.db.tables import JoinToken, Sandbox, SandboxEvent, Template
from qbox.server.services.code import Execution
from qbox.server.services.host_join import token_status
from qbox.server.services.hosts import HostView
from qbox.server.services.pools import PoolCounts, PoolView

# An execution the interpreter stopped answering about: reported, never hung.
INTERRUPTED_ERROR = CodeError(name="InterpreterError",
                              value="the code interpreter stopped before the execution completed")


def sandbox(sandbox: Sandbox, template: Template | None = None) -> dict[str, Any]:
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
        "fromPool": bool(sandbox.from_pool),
    }


def template(template: Template, owner_id: str | None = None, pool: PoolView | None = None) -> dict[str, Any]:
    """``owner_id``: the owner as the viewer may see it (template_access.owner_shown); ``pool``:
    its warm pool (services/pools.py; None: the template's own size, nothing counted)."""
    if pool is None:
        pool = PoolView(template.warm_pool_size or 0, template.warm_pool_eager, PoolCounts())
    return {
        "id": template.id,
        "name": template.name,
        "source": template.source or "image",
        "builtFromTemplateId": template.built_from_template_id,
        "status": template.status,
        "builtin": template.builtin,
        "public": template.public or template.builtin,
        "ownerId": owner_id,
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
        "startCmd": template.start_cmd,
        "readyCmd": template.ready_cmd,
        "readyTimeoutS": template.ready_timeout_s,
        "steps": list(template.steps),
        "user": template.default_user or "user",
        "workdir": template.workdir,
        "env": dict(template.envs),
        "hostSelector": dict(template.host_selector or {}),
        "registryRef": template.registry_ref,
        "codeInterpreter": template.code_interpreter,
        "warmPool": {"size": pool.size, "eager": pool.eager, "ready": pool.counts.ready,
                     "booting": pool.counts.booting, "claimed": pool.counts.claimed},
        "createdAt": to_wire(template.created_at),
        "updatedAt": to_wire(template.updated_at),
        **_source_fields(template),
    }


def _source_fields(template: Template) -> dict[str, Any]:
    """A Dockerfile template's build inputs (not the Dockerfile's text), a git one's origin."""
    if template.source == "dockerfile":
        return {"buildArgs": dict(template.build_args), "buildContextId": template.build_context_id}
    if template.source == "git":
        return {"buildArgs": dict(template.build_args), "gitUrl": template.git_url,
                "gitRef": template.git_ref, "resolvedCommitSha": template.resolved_commit_sha,
                "dockerfilePath": template.dockerfile_path, "contextPath": template.context_path,
                "buildKey": template.build_key}
    return {}


def sandbox_event(event: SandboxEvent) -> dict[str, Any]:
    return {
        "time": to_wire(event.time),
        "level": event.level,
        "component": event.component,
        "message": event.message,
    }


def command_started(started: CommandStarted) -> dict[str, Any]:
    return {"pid": started.pid, "startedAt": to_wire(started.started_at)}


def command(status: CommandStatus) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pid": status.pid, "command": list(status.command), "startedAt": to_wire(status.started_at),
        "alive": status.alive, "exitCode": status.exit_code, "signal": status.signal,
        "oomKilled": status.oom_killed,
    }
    if status.ended_at is not None:
        body["endedAt"] = to_wire(status.ended_at)
    return body


def file_stat(stat: FileStat) -> dict[str, Any]:
    return {"path": stat.path, "exists": stat.exists, "size": stat.size, "mode": stat.mode,
            "isDir": stat.is_dir, "isSymlink": stat.is_symlink,
            "symlinkTarget": stat.symlink_target, "modifiedAt": to_wire(stat.modified_at)}


def file_entry(entry: FileEntry) -> dict[str, Any]:
    return {"name": entry.name, "isDir": entry.is_dir, "size": entry.size, "mode": entry.mode,
            "mtime": to_wire(entry.mtime)}


def languages(found: Languages) -> dict[str, Any]:
    return {"languages": [{"language": language.language, "aliases": list(language.aliases),
                           "kernelName": language.kernel_name, "isDefault": language.is_default}
                          for language in found.languages]}


def context(found: Context) -> dict[str, Any]:
    return {"id": found.id, "language": found.language, "cwd": found.cwd,
            "isDefault": found.is_default, "kernelName": found.kernel_name,
            "createdAt": to_wire(found.created_at), "lastUsedAt": to_wire(found.last_used_at),
            "state": found.state}


def contexts(found: list[Context]) -> dict[str, Any]:
    return {"contexts": [context(one) for one in found]}


def code_error(error: CodeError) -> dict[str, Any]:
    return {"name": error.name, "value": error.value, "traceback": list(error.traceback)}


def code_output(output: CodeOutput) -> dict[str, Any]:
    if output.display is not None:
        return {"display": dict(output.display)}
    return {"stream": output.stream, "text": output.text}


def execution(done: Execution) -> dict[str, Any]:
    """The unary answer to code-execute; one the interpreter left unfinished says so."""
    error = done.error if done.complete else (done.error or INTERRUPTED_ERROR)
    return {"contextId": done.context_id, "language": done.language,
            "outputs": [code_output(output) for output in done.outputs],
            "result": done.result, "error": None if error is None else code_error(error),
            "executionMs": done.execution_ms, "timedOut": done.timed_out}


def host(view: HostView) -> dict[str, Any]:
    row = view.host
    disk_used = None
    if row.disk_total_mb is not None and row.disk_free_mb is not None:
        disk_used = row.disk_total_mb - row.disk_free_mb
    return {
        "id": row.id,
        "hostname": row.hostname,
        "status": view.status,
        "kind": row.kind,
        "sandboxCount": view.reserved.sandboxes,
        "usedVcpus": view.reserved.vcpus,
        "totalVcpus": row.total_vcpus,
        "usedMemoryMb": view.reserved.memory_mb,
        "totalMemoryMb": row.total_memory_mb,
        "usedDiskMb": view.reserved.disk_mb,
        "cpuPercent": row.cpu_percent,
        "memoryUsedMb": row.memory_used_mb,
        "diskUsedMb": disk_used,
        "diskTotalMb": row.disk_total_mb,
        "maxSandboxes": row.max_sandboxes,
        "runtimes": list(row.runtimes),
        "templates": view.templates,
        "version": row.version,
        "address": row.address,
        "lastHeartbeatAt": to_wire(row.last_seen_at),
        "labels": dict(row.labels),
        "createdAt": to_wire(row.created_at),
    }


def host_token(token: JoinToken, now: datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "createdAt": to_wire(token.created_at),
        "expiresAt": to_wire(token.expires_at),
        "labels": dict(token.labels),
        "usedAt": to_wire(token.used_at),
        "hostId": token.host_id,
        "revokedAt": to_wire(token.revoked_at),
        "status": token_status(token, now),
    }


def created_host_token(token: JoinToken, secret: str, url: str, now: datetime,
                       ca_hash: str | None = None) -> dict[str, Any]:
    """The token, shown this once, and the command that joins a host with it (pinning the
    cluster CA by ``ca_hash`` when the replicas serve its certificates)."""
    command = f"qbox agent --join {shlex.quote(url)} --token {secret} --listen ADDRESS:PORT"
    if ca_hash and url.startswith("https://"):
        command += f" --ca-hash {ca_hash}"
    return {**host_token(token, now), "token": secret, "joinCommand": command}
