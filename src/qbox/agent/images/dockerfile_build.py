"""A Dockerfile build with buildah, confined like a build sandbox (docs/architecture.md,
"Templates from a Dockerfile").

- Storage: a private buildah store under ``<data dir>/dockerfile-builds/<id>``
  (overlay), unmounted and removed after the build whatever happened.
- Base images: every image the Dockerfile names (core/dockerfile.py) is checked
  against the agent's pull policy and copied into that store by skopeo, with
  the store's TLS rules and the build's registry login (an authfile, never
  argv), from the host. buildah itself never pulls (``--pull=never``).
- Network: buildah runs inside a sandbox network namespace made for the build by
  the agent's network manager (the sandbox firewall: the internet as the
  template allows, never the host or private addresses), and RUN steps share it
  (``--network=host`` there is that namespace). ``ADD <url>`` is fetched from
  inside it too.
- Ids: RUN steps run in a user namespace mapping 0–65535 onto the sandboxes'
  unprivileged range (idmap.py), under crun with the default seccomp profile.
- Limits: buildah and every RUN container sit in one cgroup
  (``<agent cgroup>/<build id>``: memory, CPU and pids of the build), and the
  build has a time limit; at its end the cgroup is emptied (killed) and removed.

The result is pushed to an OCI layout and imported into the store like any
base image; ``BuildJob`` then treats it as a base with no steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from qbox.agent import cgroups
from qbox.agent.idmap import IdMapping
from qbox.agent.images.refs import RegistryCredentials, authfile, is_insecure_registry
from qbox.agent.images.runner import CommandResult, CommandRunner
from qbox.agent.network import resolv
from qbox.agent.network.base import Attachment
from qbox.core.build_context import extract_context
from qbox.core.dockerfile import images_of
from qbox.core.errors import QboxError, ValidationError
from qbox.core.image_refs import ImageRefPolicy, parse_ref
from qbox.protocol.images import DockerfileBuild

log = logging.getLogger("qbox.agent.builds")

ProgressCallback = Callable[[str], None]

# What the build's tag in its private store is called (nobody else sees it).
_BUILT = "localhost/qbox-dockerfile-build:latest"
_OUT_TAG = "image"
PIDS_LIMIT = 4096
MAX_CONTEXT_BYTES = 4 * 1024**3
CONTEXTS_DIR = "build-contexts"
BUILDS_DIR = "dockerfile-builds"
# Context uploads no build took (a control plane that died between the two calls).
STALE_CONTEXT_SECONDS = 24 * 3600
_CONTEXT_ID_RE = re.compile(r"ctx_[a-z0-9]{8,60}")
# The join of a cgroup, then the tool: the shell puts itself in each cgroup and execs.
_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class BuildFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BuildNetwork(Protocol):
    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment: ...

    async def detach(self, sandbox_id: str) -> None: ...


# --- contexts: uploaded before the build, removed after ---------------------------


def context_path(data_dir: Path, context_id: str) -> Path:
    if not _CONTEXT_ID_RE.fullmatch(context_id):
        raise ValidationError(f"build context id {context_id!r} is not valid")
    return data_dir / CONTEXTS_DIR / f"{context_id}.tar"


async def receive_context(data_dir: Path, context_id: str, sha256: str,
                          chunks: AsyncIterator[bytes]) -> int:
    """Store an uploaded context; ValidationError when its sha256 or size is wrong."""
    final = context_path(data_dir, context_id)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(_remove_stale_contexts, final.parent)
    partial = final.with_suffix(f".part-{secrets.token_hex(4)}")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_CONTEXT_BYTES:
                    raise ValidationError("build context too large")
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        if digest.hexdigest() != sha256:
            raise ValidationError("build context does not match its sha256")
        partial.rename(final)
    finally:
        partial.unlink(missing_ok=True)
    return size


def _remove_stale_contexts(directory: Path) -> None:
    cutoff = time.time() - STALE_CONTEXT_SECONDS
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                entry.unlink()


# --- the build ---------------------------------------------------------------------


def storage_name(image: str) -> str:
    """The name buildah looks ``image`` up by in its store (docker's normalisation:
    ``python:3`` is ``docker.io/library/python:3``); a digest becomes a tag of it."""
    source = parse_ref(image)
    if source.is_local:
        raise ValidationError(f"FROM {image}: a Dockerfile builds from registry images only",
                              details={"field": "dockerfile"})
    name = source.source.removeprefix("docker://")
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}" if slash else f"docker.io/library/{name}"
    elif first in ("index.docker.io", "registry-1.docker.io"):
        name = f"docker.io/{rest}"
    repo, at, _digest = name.partition("@")
    last = repo.rsplit("/", 1)[-1]
    if not at and ":" not in last:
        name = f"{repo}:latest"
    return name


class DockerfileBuilder:
    def __init__(self, *, data_dir: Path, build_id: str, runner: CommandRunner,
                 network: BuildNetwork, mapping: IdMapping | None, cgroup_parent: str,
                 insecure: frozenset[str], policy: ImageRefPolicy | None,
                 credentials: RegistryCredentials | None, log_line: ProgressCallback,
                 cgroup_root: Path = cgroups.CGROUP_ROOT) -> None:
        self.data_dir = data_dir
        self.build_id = build_id
        self.runner = runner
        self.network = network
        self.mapping = mapping
        self.cgroup = f"{cgroup_parent.rstrip('/')}/{build_id}"
        self.cgroup_root = cgroup_root
        self.insecure = insecure
        self.policy = policy
        self.credentials = credentials
        self.log = log_line
        self.work = data_dir / BUILDS_DIR / build_id
        self.storage = self.work / "storage"
        self.run_root = self.work / "run"

    # --- the public side ---------------------------------------------------------

    async def build(self, request: DockerfileBuild, memory_mb: int, vcpus: int) -> str:
        """Build; the ``oci:`` ref of the result (in the work dir, until ``cleanup``)."""
        if self.mapping is None:
            raise BuildFailed("Dockerfile builds need the agent's user namespace (its sandboxes' id mapping)")
        if shutil.which("buildah") is None:
            raise QboxError("buildah is not installed on this host (scripts/setup.sh installs it)")
        images = images_of(request.dockerfile, request.build_args).images
        for image in images:
            await self._check(image)
        self.work.mkdir(parents=True, exist_ok=True, mode=0o700)
        context = self.work / "context"
        archive = context_path(self.data_dir, request.context_id) if request.context_id else None
        await asyncio.to_thread(self._unpack_context, archive, context)
        dockerfile = self.work / "Dockerfile"
        dockerfile.write_text(request.dockerfile)
        for image in images:
            await self._pull(image)
        attachment = await self.network.attach(self.build_id, internet=request.allow_internet_access)
        try:
            await asyncio.to_thread(self._make_cgroup, memory_mb, vcpus)
            try:
                await self._bud(request, attachment, dockerfile, context)
            finally:
                await asyncio.to_thread(cgroups.remove_sandbox, self.cgroup, root=self.cgroup_root)
        finally:
            await self.network.detach(self.build_id)
        out = self.work / "out"
        result = await self._buildah(["push", "--quiet", _BUILT, f"oci:{out}:{_OUT_TAG}"])
        if not result.ok:
            raise QboxError(f"buildah push of the built image failed: {result.message()}")
        return f"oci:{out}:{_OUT_TAG}"

    async def cleanup(self) -> None:
        """Unmount and remove the build's store and files (also after a failure)."""
        if not self.work.exists():
            return
        with contextlib.suppress(Exception):
            await self._buildah(["rm", "--all"])
        await asyncio.to_thread(_unmount_under, self.work)
        await asyncio.to_thread(shutil.rmtree, self.work, True)

    # --- steps -----------------------------------------------------------------------

    async def _check(self, image: str) -> None:
        storage_name(image)
        if self.policy is not None:
            try:
                await asyncio.to_thread(self.policy.check, image, local_allowed=False)
            except QboxError as exc:
                raise ValidationError(f"FROM {image}: {exc.message}",
                                      details={"field": "dockerfile"}) from None

    def _unpack_context(self, archive: Path | None, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if archive is not None:
            if not archive.is_file():
                raise ValidationError("the build context was not received; send it again")
            extract_context(archive, dest)

    def _store_spec(self) -> str:
        return f"[overlay@{self.storage}+{self.run_root}]"

    async def _pull(self, image: str) -> None:
        source = parse_ref(image)
        registry = source.registry
        argv = ["skopeo", "copy", "--quiet"]
        if registry is not None and is_insecure_registry(registry, self.insecure):
            argv.append("--src-tls-verify=false")
        name = storage_name(image)
        if "@" in name:
            # A digest names no tag to write; stored as the repository with the digest kept
            # (buildah finds repo@digest among the image's digests).
            name = name.partition("@")[0] + ":qbox-pinned"
        self.log(f"pulling {image}")
        with authfile(self.credentials, registry, self.work) as auth:
            if auth is not None:
                argv += ["--src-authfile", str(auth)]
            argv += [source.source, f"containers-storage:{self._store_spec()}{name}"]
            result = await self.runner.run(argv)
        if not result.ok:
            message = self._redact(result.message())
            raise BuildFailed(f"pull of {image} failed: {message}")

    def _make_cgroup(self, memory_mb: int, vcpus: int) -> None:
        relative = self.cgroup.strip("/")
        if self._v2:
            self._make_v2(relative)
        else:
            for controller in ("memory", "cpu", "pids", "freezer"):
                if (self.cgroup_root / controller).is_dir():
                    (self.cgroup_root / controller / relative).mkdir(parents=True, exist_ok=True)
        if not cgroups.set_memory_limit(self.cgroup, memory_mb, root=self.cgroup_root):
            raise QboxError(f"no memory cgroup to confine the build in ({self.cgroup})")
        limit = str(memory_mb * 1024 * 1024)
        # No swap beyond the limit, as a sandbox (v1 memory+swap equal to memory; v2 none).
        for swap, value in ((self.cgroup_root / "memory" / relative / "memory.memsw.limit_in_bytes", limit),
                            (self.cgroup_root / relative / "memory.swap.max", "0")):
            if swap.is_file():
                swap.write_text(value)
        cgroups.set_cpu_limit(self.cgroup, vcpus, root=self.cgroup_root)
        for pids in (self.cgroup_root / "pids" / relative / "pids.max",
                     self.cgroup_root / relative / "pids.max"):
            if pids.is_file():
                pids.write_text(str(PIDS_LIMIT))

    @property
    def _v2(self) -> bool:
        return (self.cgroup_root / "cgroup.controllers").exists()

    def _make_v2(self, relative: str) -> None:
        """v2: the controllers enabled down to the build's cgroup and in it; buildah in its
        leaf ``buildah`` (a v2 cgroup with controllers for its children holds no process),
        RUN containers in ``run``, the limits on the build's cgroup over both."""
        build = self.cgroup_root / relative
        (build / "buildah").mkdir(parents=True, exist_ok=True)
        for directory in [*reversed(build.parents[:len(Path(relative).parts)]), build]:
            for controller in ("memory", "cpu", "pids"):
                with contextlib.suppress(OSError):
                    (directory / "cgroup.subtree_control").write_text(f"+{controller}")

    def _procs_files(self) -> list[str]:
        relative = self.cgroup.strip("/")
        if self._v2:
            return [str(self.cgroup_root / relative / "buildah" / "cgroup.procs")]
        return [str(self.cgroup_root / c / relative / "cgroup.procs")
                for c in ("memory", "cpu", "pids", "freezer")
                if (self.cgroup_root / c / relative).is_dir()]

    async def _bud(self, request: DockerfileBuild, attachment: Attachment, dockerfile: Path,
                   context: Path) -> None:
        assert self.mapping is not None
        ids = f"0:{self.mapping.base}:{self.mapping.size}"
        argv = ["buildah", *self._globals(), "bud", "--pull=never", "--isolation=oci",
                "--runtime=crun", f"--userns-uid-map={ids}", f"--userns-gid-map={ids}",
                "--network=host", f"--cgroup-parent={self.cgroup}/run",
                "--layers=false", "--format=oci", "-f", str(dockerfile), "-t", _BUILT]
        nameservers = _nameservers(attachment)
        for server in nameservers:
            argv.append(f"--dns={server}")
        if not nameservers:
            argv.append("--dns=none")
        for key, value in sorted(request.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(context))
        if attachment.netns_path is not None:
            netns = ["nsenter", f"--net={attachment.netns_path}", "--"]
        else:
            netns = ["unshare", "--net", "--"]
        command = ["/bin/sh", "-c", _JOIN, "sh", *self._procs_files(), "--", *netns, *argv]
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(
                self.runner.run(command, on_output=lambda line: self.log(self._redact(line))),
                request.timeout_seconds)
        except TimeoutError:
            raise BuildFailed(f"the build took longer than {request.timeout_seconds} s") from None
        if result.returncode == 125:
            raise QboxError("could not place the build in its cgroup")
        if not result.ok:
            raise BuildFailed(f"the Dockerfile build failed: {self._redact(result.message(3))}")
        self.log(f"Dockerfile built in {time.monotonic() - started:.1f} s")

    def _globals(self) -> list[str]:
        return [f"--root={self.storage}", f"--runroot={self.run_root}", "--storage-driver=overlay"]

    async def _buildah(self, args: list[str]) -> CommandResult:
        return await self.runner.run(["buildah", *self._globals(), *args])

    def _redact(self, text: str) -> str:
        if self.credentials is not None:
            text = self.credentials.redact(text)
        return text.replace(str(self.data_dir), "<agent data dir>")


def _nameservers(attachment: Attachment) -> list[str]:
    if attachment.resolv_conf is None:
        return []
    try:
        text = attachment.resolv_conf.read_text()
    except OSError:
        return []
    return [str(address) for address in resolv.parse_nameservers(text)]


def _unmount_under(directory: Path) -> None:
    """Lazily unmount every mount at or below ``directory`` (deepest first)."""
    prefix = str(directory.resolve())
    points: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 4:
                point = fields[4].replace("\\040", " ")
                if point == prefix or point.startswith(prefix + "/"):
                    points.append(point)
    for point in sorted(points, key=len, reverse=True):
        with contextlib.suppress(OSError):
            _umount(point)


def _umount(point: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    if libc.umount2(point.encode(), mnt_detach) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), point)


def image_fields(config: Any) -> dict[str, str]:
    """The built image's USER (the part before any ``:group``) and WORKDIR."""
    user = str(getattr(config, "user", "") or "").partition(":")[0]
    return {"imageUser": user or "root", "imageWorkdir": str(getattr(config, "working_dir", "") or "")}
