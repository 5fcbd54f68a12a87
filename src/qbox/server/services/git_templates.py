"""POST /v1/templates/from-git's service: resolve the ref once, reuse a ready build of the
same inputs (the caller's own), or fetch that one commit and hand its Dockerfile and context
to services/dockerfile_templates.py. The rules are services/git_sources.py's; git runs in
services/git_remote.py's workspace, a few at a time, each request within
``QBOX_GIT_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from qbox.core.errors import ConflictError, DockerfilePathInvalidError, GitResolveUnavailableError
from qbox.core.ids import template_id_for
from qbox.server.db.tables import Template
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.dockerfile_templates import DockerfileTemplates, DockerfileTemplateSpec
from qbox.server.services.git_remote import Access, GitWorkspace
from qbox.server.services.git_sources import (
    BUILD_DISK_MB,
    HEX,
    INSECURE_SCHEMES,
    SECURE_SCHEMES,
    BuildPaths,
    GitUrl,
    build_key,
    build_paths,
    cache_source,
    check_addresses,
    check_build_args,
    check_ref,
    host_addresses,
    match_ref,
    no_ref,
    parse_git_url,
    parse_ls_remote,
    pinned_addresses,
)
from qbox.server.services.template_access import DELETED

__all__ = ["GitTemplateRequest", "GitTemplateResult", "GitTemplates"]

# Git fetches at once in one control-plane process; more wait (within their deadline).
GIT_CONCURRENCY = 4
MAX_DOCKERFILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class GitTemplateRequest:
    name: str
    url: str
    ref: str = "main"
    dockerfile_path: str = ""
    context_path: str = "."
    build_args: Mapping[str, str] | None = None
    default_vcpus: int = 2
    default_memory_mb: int = 2048
    tags: tuple[str, ...] = ()
    start_cmd: str | None = None
    ready_cmd: str | None = None
    ready_timeout_s: int = 20
    enable_ssh: bool = False


@dataclass(frozen=True)
class GitTemplateResult:
    template: Template
    cache_hit: bool
    resolved_commit_sha: str
    build_key: str


@dataclass(frozen=True)
class _Fetched:
    dockerfile: str
    context: bytes


@dataclass(frozen=True)
class _Plan:
    url: GitUrl
    commit: str
    paths: BuildPaths
    build_args: dict[str, str]
    key: str


class GitTemplates:
    """POST /v1/templates/from-git's decisions; the build is services.dockerfile_templates'."""

    def __init__(self, ctx: ServiceContext, dockerfiles: DockerfileTemplates) -> None:
        self.ctx = ctx
        self.dockerfiles = dockerfiles
        self._slots = asyncio.Semaphore(GIT_CONCURRENCY)

    async def create(self, principal: Principal, request: GitTemplateRequest) -> GitTemplateResult:
        settings = self.ctx.settings
        url = parse_git_url(request.url, allow_insecure=settings.git_allow_insecure)
        ref = check_ref(request.ref)
        paths = build_paths(request.dockerfile_path, request.context_path)
        build_args = check_build_args(request.build_args or {})
        settings.check_caps(request.default_vcpus, request.default_memory_mb, BUILD_DISK_MB,
                            names=("defaultVcpus", "defaultMemoryMb", "defaultDiskMb"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.git_timeout_seconds
        await self._take_slot(url, deadline)
        try:
            addresses = [] if url.scheme == "file" else await host_addresses(url, deadline)
            if url.scheme != "file":
                check_addresses(url, addresses, allow_insecure=settings.git_allow_insecure)
            protocols = INSECURE_SCHEMES if settings.git_allow_insecure else SECURE_SCHEMES
            access = Access(tuple(protocols), pinned_addresses(url, addresses))
            async with GitWorkspace(url.url, access, deadline) as git:
                commit = await self._resolve(git, ref)
                plan = _Plan(url, commit, paths, build_args, build_key(url, commit, paths, build_args))
                if (same := await self._same_request(principal, request.name, plan.key)) is not None:
                    return self._result(same, plan)
                if (source := await self._cached(principal, plan.key)) is not None:
                    fetched = None
                else:
                    fetched = await self._fetch(git, ref, plan)
        finally:
            self._slots.release()
        try:
            if fetched is None:
                assert source is not None
                spec = self._spec(request, plan, source.dockerfile or "", b"")
                return self._result(await self.dockerfiles.copy_ready(principal, spec, source), plan)
            spec = self._spec(request, plan, fetched.dockerfile, fetched.context)
            return self._result(await self.dockerfiles.create(principal, spec), plan)
        except ConflictError:
            # The same request again (a client retrying after its own timeout): the template it made.
            if (same := await self._same_request(principal, request.name, plan.key)) is not None:
                return self._result(same, plan)
            raise

    async def _take_slot(self, url: GitUrl, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise GitResolveUnavailableError(
                "too many git fetches at once on this control plane; try again",
                details={"url": url.url, "transient": True}) from None

    async def _resolve(self, git: GitWorkspace, ref: str) -> str:
        match = match_ref(ref, parse_ls_remote(await git.list_refs()))
        if match.sha is not None:
            return match.sha
        assert match.prefix is not None
        # A short name of a commit no ref points at: look for it in every branch's and tag's history.
        if await git.fetch(["+refs/heads/*:refs/qbox/heads/*", "+refs/tags/*:refs/qbox/tags/*"], depth=None):
            if (sha := await git.unique_commit(match.prefix)) is not None:
                return sha
        raise no_ref(ref)

    async def _fetch(self, git: GitWorkspace, ref: str, plan: _Plan) -> _Fetched:
        commit = plan.commit
        await self._fetch_commit(git, ref, commit)
        kind, _, blob = await git.lookup(commit, plan.paths.dockerfile, max_bytes=MAX_DOCKERFILE_BYTES)
        if kind != "blob":
            raise _bad_dockerfile(plan.paths.dockerfile, kind)
        try:
            dockerfile = blob.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad_dockerfile(plan.paths.dockerfile, "not UTF-8") from None
        kind, tree, _ = await git.lookup(commit, plan.paths.context, max_bytes=0)
        if kind != "tree":
            where = plan.paths.context or "."
            raise DockerfilePathInvalidError(
                f"contextPath {where!r} is not a directory of commit {commit[:12]} ({_kind_words(kind)})",
                details={"field": "contextPath", "contextPath": where})
        tar = await git.archive(tree, self.ctx.settings.max_build_context_bytes)
        return _Fetched(dockerfile, await asyncio.to_thread(gzip.compress, tar, 6))

    async def _fetch_commit(self, git: GitWorkspace, ref: str, commit: str) -> None:
        """The commit, shallow when the server lets a commit be asked for; else through the
        ref it came from, else the whole history of the branches and tags."""
        tries: list[tuple[list[str], int | None]] = [([f"{commit}:refs/qbox/commit"], 1)]
        if not HEX.fullmatch(ref.lower()):
            name = ref if ref == "HEAD" or ref.startswith("refs/") else None
            for wanted in ([name] if name else [f"refs/heads/{ref}", f"refs/tags/{ref}"]):
                tries.append(([f"+{wanted}:refs/qbox/ref"], 1))
        tries.append((["+refs/heads/*:refs/qbox/heads/*", "+refs/tags/*:refs/qbox/tags/*"], None))
        for refspecs, depth in tries:
            if await git.fetch(refspecs, depth=depth) and await git.commit_exists(commit):
                return
        raise no_ref(ref)

    async def _same_request(self, principal: Principal, name: str, key: str) -> Template | None:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id_for(name))
        if (template is None or template.status == DELETED or template.owner_id != principal.user_id
                or template.build_key != key):
            return None
        return template

    async def _cached(self, principal: Principal, key: str) -> Template | None:
        async with self.ctx.sessions() as session:
            rows = (await session.execute(
                select(Template).where(Template.owner_id == principal.user_id,
                                       Template.build_key == key, Template.status == "ready")
                .order_by(Template.created_at.desc()).limit(50))).scalars().all()
        return cache_source(rows)

    @staticmethod
    def _spec(request: GitTemplateRequest, plan: _Plan, dockerfile: str,
              context: bytes) -> DockerfileTemplateSpec:
        return DockerfileTemplateSpec(
            name=request.name, dockerfile=dockerfile, context=context, build_args=plan.build_args,
            default_vcpus=request.default_vcpus, default_memory_mb=request.default_memory_mb,
            default_disk_mb=BUILD_DISK_MB, ready_timeout_s=request.ready_timeout_s,
            enable_ssh=request.enable_ssh, tags=tuple(request.tags),
            start_cmd=request.start_cmd or None, ready_cmd=request.ready_cmd or None,
            source="git", git_url=plan.url.url, git_ref=request.ref, resolved_commit_sha=plan.commit,
            dockerfile_path=plan.paths.dockerfile, context_path=plan.paths.context or ".",
            build_key=plan.key)

    @staticmethod
    def _result(template: Template, plan: _Plan) -> GitTemplateResult:
        return GitTemplateResult(template, template.built_from_template_id is not None,
                                 template.resolved_commit_sha or plan.commit, plan.key)


def _kind_words(kind: str) -> str:
    return {
        "tree": "it is a directory",
        "blob": "it is a file",
        "missing": "no such path",
        "outside": "a symbolic link out of the repository",
        "loop": "a loop of symbolic links",
        "notdir": "a path through a file",
        "toolarge": f"larger than {MAX_DOCKERFILE_BYTES} bytes",
    }.get(kind, kind)


def _bad_dockerfile(path: str, kind: str) -> DockerfilePathInvalidError:
    return DockerfilePathInvalidError(
        f"no Dockerfile at {path!r} ({_kind_words(kind)})",
        details={"field": "dockerfilePath", "dockerfilePath": path})
