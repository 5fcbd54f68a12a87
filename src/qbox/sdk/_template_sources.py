"""Templates from a Dockerfile or a git repository; ``Template`` and ``AsyncTemplate`` inherit
these (sync and async share the operations below, as every module here does).

    info = Template.from_dockerfile("web", dockerfile="Dockerfile", context=".", wait=True)
    build = Template.from_git("api", "https://github.com/org/repo", ref="main", wait=True)

``from_dockerfile`` tars the context on this machine (honouring its
``.dockerignore``) into a temporary file, uploads it (``POST
/v1/build-contexts``, streamed), then creates the template (``POST
/v1/templates`` with ``dockerfile``, ``buildContextId``, ``buildArgs``); the
server builds it with buildah. ``from_git`` is ``POST /v1/templates/from-git``
(WIRE_PROTOCOL.md §4.10): the server clones the repository itself.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from qbox.sdk import _template_ops as ops
from qbox.sdk._api import Api, decode_response
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._models import TemplateInfo
from qbox.sdk._steps import Op, Upload
from qbox.sdk._transport import AsyncConnection, Connection

__all__ = ["AsyncTemplateSources", "GitTemplateBuild", "TemplateSources", "context_archive",
           "dockerfile_text"]

GIT_DEFAULT_VCPUS = 2
GIT_DEFAULT_MEMORY_MB = 2048
GIT_DEFAULT_READY_TIMEOUT_S = 20
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class GitTemplateBuild:
    """What ``from_git`` returns: the template (ready already on a cache hit, or once waited
    for), and how the server resolved the repository."""

    template: TemplateInfo
    cache_hit: bool
    resolved_commit_sha: str
    build_key: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def template_id(self) -> str:
        return self.template.id

    @property
    def status(self) -> str:
        return self.template.status


# --- the Dockerfile and its context, read here ----------------------------------------------


def dockerfile_text(dockerfile: PathLike | None, context: PathLike | None) -> str:
    """The Dockerfile's text: ``dockerfile`` as a path when it names a file (a ``Path`` always
    does), else as the text itself; None: ``Dockerfile`` in ``context``."""
    if dockerfile is None:
        if context is None:
            raise ValueError("from_dockerfile needs dockerfile= (a path or the text) or context=")
        dockerfile = Path(context) / "Dockerfile"
    if isinstance(dockerfile, os.PathLike) or ("\n" not in dockerfile and Path(dockerfile).is_file()):
        return Path(dockerfile).read_text(encoding="utf-8")
    if not dockerfile.strip():
        raise ValueError("the Dockerfile is empty")
    return dockerfile


def _ignore_rules(root: Path) -> list[tuple[bool, str]]:
    """``.dockerignore``'s patterns, in order: (negated, pattern relative to the context)."""
    try:
        text = (root / ".dockerignore").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rules: list[tuple[bool, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).replace(os.sep, "/").lstrip("/")
        if pattern and pattern != ".":
            rules.append((negated, pattern))
    return rules


def ignored(relative: str, rules: Sequence[tuple[bool, str]]) -> bool:
    """Whether ``relative`` (a/b/c) is left out: the last matching rule decides; a pattern that
    matches a directory leaves out what is under it."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in rules:
        target = pattern.replace("**/", "*/") if pattern.startswith("**/") else pattern
        if any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, target) for p in prefixes) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(relative, pattern[3:])):
            verdict = not negated
    return verdict


def context_archive(context: PathLike | None) -> tuple[IO[bytes], int]:
    """A gzipped tar of ``context`` (none: an empty one) in a temporary file, and its size.
    Symlinks stay links; sockets, fifos and devices are left out."""
    handle = tempfile.TemporaryFile()
    with tarfile.open(fileobj=handle, mode="w:gz") as tar:
        if context is not None:
            root = Path(context)
            if not root.is_dir():
                handle.close()
                raise ValueError(f"context {root} is not a directory")
            rules = _ignore_rules(root)
            for directory, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in [*dirnames, *sorted(filenames)]:
                    path = Path(directory) / name
                    relative = path.relative_to(root).as_posix()
                    if rules and ignored(relative, rules):
                        if name in dirnames and not any(negated for negated, _ in rules):
                            dirnames.remove(name)
                        continue
                    mode = path.lstat().st_mode
                    if stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                        tar.add(path, arcname=relative, recursive=False)
    size = handle.tell()
    handle.seek(0)
    return handle, size


# --- operations --------------------------------------------------------------------------


def upload_context(api: Api, archive: IO[bytes], size: int) -> Op[str]:
    """``POST /v1/build-contexts`` (the archive streamed from its file): the context's id."""
    request = api.build("POST", "/v1/build-contexts", content=Upload(archive, size))
    # Sent once: a body read from a file is not sent again behind the caller's back.
    response = yield from api.exchange(request, retry=False)
    body = decode_response(response)
    return str(body["id"])


def create_from_dockerfile(api: Api, body: dict[str, Any], archive: IO[bytes] | None, size: int,
                           waiting: ops.BuildWait | None) -> Op[TemplateInfo]:
    if archive is not None:
        body = {**body, "buildContextId": (yield from upload_context(api, archive, size))}
    info = TemplateInfo.from_wire((yield from api.post("/v1/templates", json=body)))
    if waiting is None:
        return info
    return (yield from ops.wait_for_build(api, info.id, timeout=waiting.timeout, on_log=waiting.on_log))


def create_from_git(api: Api, body: dict[str, Any], waiting: ops.BuildWait | None) -> Op[GitTemplateBuild]:
    data = yield from api.post("/v1/templates/from-git", json=body)
    if not isinstance(data, dict):
        raise ValueError("the server's from-git answer is not a JSON object")
    info = TemplateInfo.from_wire(data)
    if waiting is not None and not info.is_ready:
        info = yield from ops.wait_for_build(api, info.id, timeout=waiting.timeout, on_log=waiting.on_log)
    return GitTemplateBuild(info, bool(data.get("cacheHit", False)), str(data.get("resolvedCommitSha") or ""),
                            str(data.get("buildKey") or ""), data)


def dockerfile_body(name: str, dockerfile: str, build_args: Mapping[str, str] | None, *,
                    default_vcpus: int, default_memory_mb: int, default_disk_mb: int | None,
                    ready_timeout_s: int, enable_ssh: bool, tags: Sequence[str] | None,
                    start_cmd: str | None, ready_cmd: str | None,
                    allow_internet_access: bool | None,
                    registry_credentials: ops.RegistryCredentials | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "dockerfile": dockerfile,
        "buildArgs": {str(k): str(v) for k, v in (build_args or {}).items()},
        "defaultVcpus": int(default_vcpus), "defaultMemoryMb": int(default_memory_mb),
        "readyTimeoutS": int(ready_timeout_s), "enableSsh": bool(enable_ssh),
        "tags": [str(t) for t in tags or ()],
    }
    optional = {"defaultDiskMb": default_disk_mb, "startCmd": start_cmd, "readyCmd": ready_cmd,
                "allowInternetAccess": allow_internet_access}
    body.update({key: value for key, value in optional.items() if value is not None})
    if registry_credentials is not None:
        body["registryCredentials"] = ops._credentials(registry_credentials)
    return body


def git_body(name: str, url: str, *, ref: str, dockerfile_path: str, context_path: str,
             build_args: Mapping[str, str] | None, default_vcpus: int, default_memory_mb: int,
             tags: Sequence[str] | None, start_cmd: str | None, ready_cmd: str | None,
             ready_timeout_s: int, enable_ssh: bool) -> dict[str, Any]:
    """§4.10's body: every key, always (the published SDK's shape)."""
    return {
        "name": name, "url": url, "ref": ref, "dockerfilePath": dockerfile_path,
        "contextPath": context_path,
        "buildArgs": {str(k): str(v) for k, v in (build_args or {}).items()},
        "defaultMemoryMb": int(default_memory_mb), "defaultVcpus": int(default_vcpus),
        "tags": [str(t) for t in tags or ()], "startCmd": start_cmd or "", "readyCmd": ready_cmd or "",
        "readyTimeoutS": int(ready_timeout_s), "enableSsh": bool(enable_ssh),
    }


# --- the public methods ---------------------------------------------------------------------


class TemplateSources:
    @classmethod
    def from_dockerfile(
        cls,
        name: str,
        dockerfile: PathLike | None = None,
        *,
        context: PathLike | None = None,
        build_args: Mapping[str, str] | None = None,
        default_vcpus: int = ops.DEFAULT_VCPUS,
        default_memory_mb: int = ops.DEFAULT_MEMORY_MB,
        default_disk_mb: int | None = None,
        ready_timeout_s: int = ops.DEFAULT_READY_TIMEOUT_S,
        enable_ssh: bool = False,
        tags: Sequence[str] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        allow_internet_access: bool | None = None,
        registry_credentials: ops.RegistryCredentials | None = None,
        wait: bool = False,
        on_log: ops.LogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Build template ``name`` from a Dockerfile (a path, or its text; None: ``Dockerfile`` in
        ``context``) and the ``context`` directory (None: an empty context), with ``build_args``.

        The context is tarred here (its ``.dockerignore`` honoured) and uploaded. Every image the
        Dockerfile builds from must be one you may pull (as for ``create``; registry images only);
        ``registry_credentials`` (``(user, password)``) log in to pull them, never stored.
        Waits as ``create`` does: ``wait=True`` or ``on_log`` follow the build log to its end.
        """
        text = dockerfile_text(dockerfile, context)
        body = dockerfile_body(name, text, build_args, default_vcpus=default_vcpus,
                               default_memory_mb=default_memory_mb, default_disk_mb=default_disk_mb,
                               ready_timeout_s=ready_timeout_s, enable_ssh=enable_ssh, tags=tags,
                               start_cmd=start_cmd, ready_cmd=ready_cmd,
                               allow_internet_access=allow_internet_access,
                               registry_credentials=registry_credentials)
        archive, size = context_archive(context) if context is not None else (None, 0)
        try:
            with Connection.open(config, api_key, base_url, request_timeout) as conn:
                return conn.run(create_from_dockerfile(conn.api, body, archive, size,
                                                       ops.BuildWait.asked(wait, on_log, timeout)))
        finally:
            if archive is not None:
                archive.close()

    @classmethod
    def from_git(
        cls,
        name: str,
        url: str,
        *,
        ref: str = "main",
        dockerfile_path: str = "",
        context_path: str = ".",
        build_args: Mapping[str, str] | None = None,
        default_vcpus: int = GIT_DEFAULT_VCPUS,
        default_memory_mb: int = GIT_DEFAULT_MEMORY_MB,
        tags: Sequence[str] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        ready_timeout_s: int = GIT_DEFAULT_READY_TIMEOUT_S,
        enable_ssh: bool = False,
        wait: bool = False,
        on_log: ops.LogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> GitTemplateBuild:
        """Build template ``name`` from the git repository at ``url`` (public https), at ``ref``,
        from the Dockerfile at ``dockerfile_path`` ("": found in ``context_path``).

        The server resolves ``ref`` to a commit; when one of your templates was already built from
        exactly these inputs it is reused (``cache_hit``, the template ``ready`` at once).
        Waits as ``create`` does."""
        body = git_body(name, url, ref=ref, dockerfile_path=dockerfile_path, context_path=context_path,
                        build_args=build_args, default_vcpus=default_vcpus,
                        default_memory_mb=default_memory_mb, tags=tags, start_cmd=start_cmd,
                        ready_cmd=ready_cmd, ready_timeout_s=ready_timeout_s, enable_ssh=enable_ssh)
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(create_from_git(conn.api, body, ops.BuildWait.asked(wait, on_log, timeout)))


class AsyncTemplateSources:
    @classmethod
    async def from_dockerfile(
        cls,
        name: str,
        dockerfile: PathLike | None = None,
        *,
        context: PathLike | None = None,
        build_args: Mapping[str, str] | None = None,
        default_vcpus: int = ops.DEFAULT_VCPUS,
        default_memory_mb: int = ops.DEFAULT_MEMORY_MB,
        default_disk_mb: int | None = None,
        ready_timeout_s: int = ops.DEFAULT_READY_TIMEOUT_S,
        enable_ssh: bool = False,
        tags: Sequence[str] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        allow_internet_access: bool | None = None,
        registry_credentials: ops.RegistryCredentials | None = None,
        wait: bool = False,
        on_log: ops.AsyncLogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.from_dockerfile``, awaited (``on_log`` may be an ``async def``)."""
        text = dockerfile_text(dockerfile, context)
        body = dockerfile_body(name, text, build_args, default_vcpus=default_vcpus,
                               default_memory_mb=default_memory_mb, default_disk_mb=default_disk_mb,
                               ready_timeout_s=ready_timeout_s, enable_ssh=enable_ssh, tags=tags,
                               start_cmd=start_cmd, ready_cmd=ready_cmd,
                               allow_internet_access=allow_internet_access,
                               registry_credentials=registry_credentials)
        archive, size = context_archive(context) if context is not None else (None, 0)
        try:
            async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
                return await conn.run(create_from_dockerfile(conn.api, body, archive, size,
                                                             ops.BuildWait.asked(wait, on_log, timeout)))
        finally:
            if archive is not None:
                archive.close()

    @classmethod
    async def from_git(
        cls,
        name: str,
        url: str,
        *,
        ref: str = "main",
        dockerfile_path: str = "",
        context_path: str = ".",
        build_args: Mapping[str, str] | None = None,
        default_vcpus: int = GIT_DEFAULT_VCPUS,
        default_memory_mb: int = GIT_DEFAULT_MEMORY_MB,
        tags: Sequence[str] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        ready_timeout_s: int = GIT_DEFAULT_READY_TIMEOUT_S,
        enable_ssh: bool = False,
        wait: bool = False,
        on_log: ops.AsyncLogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> GitTemplateBuild:
        """As ``Template.from_git``, awaited."""
        body = git_body(name, url, ref=ref, dockerfile_path=dockerfile_path, context_path=context_path,
                        build_args=build_args, default_vcpus=default_vcpus,
                        default_memory_mb=default_memory_mb, tags=tags, start_cmd=start_cmd,
                        ready_cmd=ready_cmd, ready_timeout_s=ready_timeout_s, enable_ssh=enable_ssh)
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(create_from_git(conn.api, body, ops.BuildWait.asked(wait, on_log, timeout)))
