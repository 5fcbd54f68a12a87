"""A template build (docs/agent-protocol.md, "Builds"): base image, steps, one new layer.

The steps run in a build sandbox: an ordinary sandbox of the base image,
with the same user namespace, seccomp profile and limits as every other
one, that the sandbox list never shows (the control plane does not know it
and would kill it). Its writable layer is the build's result: copied out,
cleaned of what qbox itself put there (``build_layer.py``), and committed to the
store as a layer on top of the base.

``BuildJob.events()`` streams what happens as NDJSON-ready dicts: ``log``
lines while it runs, then one ``result`` or ``error``. Closing the stream
cancels the build; the build sandbox goes in every case.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qbox.agent import users
from qbox.agent.images import build_layer as layers
from qbox.agent.images import dockerfile_build
from qbox.agent.images.dockerfile_build import DockerfileBuilder
from qbox.agent.images.kernelspecs import find_kernelspecs
from qbox.agent.images.refs import RegistryCredentials
from qbox.agent.images.runner import SubprocessRunner
from qbox.agent.images.store_tree import human_size
from qbox.agent.processes import follow
from qbox.agent.sandbox import Sandbox, SandboxParams
from qbox.agent.sandboxes import SandboxManager
from qbox.core.errors import QboxError, ValidationError
from qbox.core.image_refs import LOCAL_SOURCE_UNUSABLE, ImageRefPolicy, local_path
from qbox.protocol.images import BuildRequest, BuildStep
from qbox.protocol.processes import OutputEvent

log = logging.getLogger("qbox.agent.builds")

Event = dict[str, Any]
ProgressCallback = Callable[[str], None]

_SHOWN_COMMAND = 80
_USERS_WITH_FALLBACKS = ("root", users.DEFAULT_USER)


class ImageConfigView(Protocol):
    @property
    def working_dir(self) -> str: ...


class KernelSource(Protocol):
    """Where an image's Jupyter kernelspecs are found (``ImageStore``)."""

    def kernels(self, digest: str) -> list[dict[str, Any]] | None: ...

    def rootfs_path(self, digest: str) -> Path: ...


class BuildStore(KernelSource, Protocol):
    """What a build needs of ``ImageStore``."""

    async def import_image(self, ref: str, name: str, on_progress: ProgressCallback | None = None,
                           *, credentials: RegistryCredentials | None = None) -> Any: ...

    def config(self, digest: str) -> ImageConfigView: ...

    def work_dir(self) -> Path: ...

    async def commit(self, name: str, base_digest: str, layer_dir: Path, *,
                     env: dict[str, str], working_dir: str | None, user: str | None,
                     kernels: list[dict[str, str]],
                     on_progress: ProgressCallback | None = None) -> Any: ...

    async def push(self, digest: str, dest: str,
                   on_progress: ProgressCallback | None = None) -> str: ...


class BuildFailed(Exception):
    """A step (or the built image) is wrong: the user's build, not the host, failed."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step


async def image_kernels(images: KernelSource, digest: str) -> list[dict[str, str]]:
    """The image's Jupyter kernelspecs: saved at commit for a built image, read from the
    rootfs of a base image."""
    saved = images.kernels(digest)
    if saved is not None:
        return list(saved)
    try:
        rootfs = images.rootfs_path(digest)
    except QboxError:
        return []
    if not rootfs.is_dir():
        return []
    return [spec.to_json() for spec in await asyncio.to_thread(find_kernelspecs, rootfs)]


def build_sandbox_id() -> str:
    return "sb_build" + secrets.token_hex(12)


def step_label(step: BuildStep) -> str:
    """How a step is named in the log and in a failure: ``run: make``."""
    if step.run is not None:
        command = " ".join(step.run.split())
        shown = command if len(command) <= _SHOWN_COMMAND else command[:_SHOWN_COMMAND - 1] + "…"
        return f"run: {shown}"
    if step.copy_ is not None:
        return f"copy: {step.copy_.path}"
    if step.workdir is not None:
        return f"workdir: {step.workdir}"
    # Names only: values may be tokens.
    return "env: " + " ".join(sorted(step.env or {}))


def _copy_content(step: BuildStep) -> bytes:
    assert step.copy_ is not None
    if step.copy_.encoding == "base64":
        try:
            return base64.b64decode(step.copy_.content, validate=True)
        except ValueError:
            raise BuildFailed("copy content is not valid base64") from None
    return step.copy_.content.encode()


@dataclass
class _State:
    """What the steps so far have set."""

    env: dict[str, str]
    cwd: str
    workdir: str | None = None


class BuildJob:
    def __init__(self, request: BuildRequest, store: BuildStore, sandboxes: SandboxManager,
                 *, data_dir: Path | None = None, policy: ImageRefPolicy | None = None,
                 insecure_registries: frozenset[str] = frozenset()) -> None:
        self._request = request
        self._insecure = insecure_registries
        # What may be pulled, checked again here: the control plane checked it, but this
        # host's files and network are ours to guard (None: anything, for tests of steps).
        self._policy = policy
        # Where the agent keeps its state: the host's business, kept out of what users read.
        self._data_dir = str(data_dir) if data_dir is not None else None
        self._store = store
        self._sandboxes = sandboxes
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._credentials = _credentials(request)
        self.sandbox_id = build_sandbox_id()

    # --- the stream ------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        task = asyncio.create_task(self._run())
        try:
            while True:
                event = await self._queue.get()
                yield event
                if event["type"] != "log":
                    return
        finally:
            if not task.done():
                task.cancel()
            # The build's own cleanup (its sandbox) runs to its end even if we are
            # cancelled again meanwhile: wait() never cancels what it waits for.
            await asyncio.wait({task})

    def _log(self, line: str) -> None:
        self._queue.put_nowait({"type": "log", "line": self._redact(line)})

    def _end(self, event: Event) -> None:
        if "message" in event:
            event["message"] = self._redact(event["message"])
        self._queue.put_nowait(event)

    def _redact(self, text: str) -> str:
        # The store keeps the password out of what it reports; this is the second lock.
        if self._credentials is not None:
            text = self._credentials.redact(text)
        if self._data_dir:
            text = text.replace(self._data_dir, "<agent data dir>")
        return text

    async def _run(self) -> None:
        try:
            self._end(await self._build())
        except _Refused as exc:
            self._log(f"build failed: {exc.message}")
            self._end({"type": "error", "code": "validation_error", "message": exc.message,
                       "step": None})
        except BuildFailed as exc:
            self._log(f"build failed: {exc.message}")
            self._end({"type": "error", "code": "build_failed", "message": exc.message,
                       "step": exc.step})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the build's end, not raised
            message = exc.message if isinstance(exc, QboxError) else f"{type(exc).__name__}: {exc}"
            log.error("build %s (%s) failed: %s", self._request.name, self.sandbox_id,
                      self._redact(message), exc_info=not isinstance(exc, QboxError))
            self._log(f"build failed: {message}")
            self._end({"type": "error", "code": "internal_error", "message": message,
                       "step": None})

    # --- the build -------------------------------------------------------------

    async def _build(self) -> Event:
        request = self._request
        image_fields: dict[str, str] = {}
        if request.dockerfile is not None:
            base = await self._build_dockerfile()
            image_fields = dockerfile_build.image_fields(self._store.config(base.digest))
        else:
            base = await self._import_base()
        if not request.steps:
            if request.dockerfile is None and request.user not in _USERS_WITH_FALLBACKS:
                await self._check_user_in_base(base.digest)
            digest, size = base.digest, base.size_bytes
            kernels = await image_kernels(self._store, digest)
        else:
            digest, size, kernels = await self._build_layer(base.digest)
        pushed = None
        if request.push:
            try:
                pushed = await self._store.push(digest, request.push, self._log)
            except QboxError as exc:
                raise BuildFailed(f"push failed: {exc.message}") from exc
        self._log(f"template ready: {digest}, {human_size(size)}")
        return {"type": "result", "digest": digest, "sizeBytes": size, "kernels": kernels,
                "baseDigest": base.digest, "pushedRef": pushed, **image_fields}

    async def _build_dockerfile(self) -> Any:
        """Build the Dockerfile with buildah and import its image into the store."""
        request = self._request
        assert request.dockerfile is not None
        if self._data_dir is None:
            raise BuildFailed("Dockerfile builds need the agent's data dir")
        data_dir = Path(self._data_dir)
        builder = DockerfileBuilder(
            data_dir=data_dir, build_id=self.sandbox_id, runner=SubprocessRunner(),
            network=self._sandboxes.network, mapping=self._sandboxes.id_mapping,
            cgroup_parent=self._sandboxes.cgroup_parent, insecure=self._insecure,
            policy=self._policy, credentials=self._credentials, log_line=self._log)
        try:
            try:
                ref = await builder.build(request.dockerfile, request.memory_mb, request.vcpus)
            except ValidationError as exc:
                raise _Refused(exc.message) from None
            except dockerfile_build.BuildFailed as exc:
                raise BuildFailed(exc.message) from None
            return await self._store.import_image(ref, request.name, self._log)
        finally:
            await builder.cleanup()
            if request.dockerfile.context_id:
                dockerfile_build.context_path(data_dir, request.dockerfile.context_id).unlink(
                    missing_ok=True)

    async def _import_base(self) -> Any:
        request = self._request
        if self._policy is not None:
            try:
                await asyncio.to_thread(self._policy.check, request.ref, local_allowed=True,
                                        realpath=os.path.realpath)
            except QboxError as exc:
                raise _Refused(exc.message) from None
        # Whatever goes wrong with a host path is told in the same words: a user must not
        # learn from a build which files exist on the host or what they hold.
        local = local_path(request.ref) is not None
        try:
            return await self._store.import_image(request.ref, request.name, self._log,
                                                  credentials=self._credentials)
        except ValidationError as exc:
            raise _Refused(LOCAL_SOURCE_UNUSABLE if local else exc.message) from exc
        except QboxError as exc:
            raise BuildFailed(f"pull failed: {LOCAL_SOURCE_UNUSABLE if local else exc.message}") from exc

    async def _check_user_in_base(self, digest: str) -> None:
        # Without steps no sandbox runs: the base image's rootfs is where the user must be.
        await asyncio.to_thread(self._check_user, self._store.rootfs_path(digest))

    def _check_user(self, rootfs: Path) -> None:
        try:
            users.resolve_in_rootfs(rootfs, self._request.user)
        except ValidationError:
            raise BuildFailed(f"user {self._request.user} does not exist in the image") from None

    async def _build_layer(self, base_digest: str) -> tuple[str, int, list[dict[str, str]]]:
        request = self._request
        config = self._store.config(base_digest)
        state = _State(env=dict(request.env), cwd=config.working_dir or "/")
        sandbox = await self._sandboxes.create(SandboxParams(
            id=self.sandbox_id, image_digest=base_digest, vcpus=request.vcpus,
            memory_mb=request.memory_mb, disk_size_mb=request.disk_mb,
            allow_internet_access=True, runtime=request.runtime, build=True))
        work: Path | None = None
        try:
            upper = layers.upper_dir(sandbox.directory)
            baseline = await asyncio.to_thread(layers.snapshot, upper)
            total = len(request.steps)
            for index, step in enumerate(request.steps, start=1):
                await self._step(sandbox, index, total, step, state)
            if request.user not in _USERS_WITH_FALLBACKS:
                await asyncio.to_thread(self._check_user, sandbox.rootfs)
            await self._sandboxes.stop(sandbox.id, "build committing")
            kernels = [k.to_json() for k in
                       await asyncio.to_thread(find_kernelspecs, sandbox.rootfs)]
            work = self._store.work_dir()
            layer = work / "layer"
            await layers.copy_tree(upper, layer)
            await asyncio.to_thread(layers.clean, layer, upper, baseline,
                                    self._sandboxes.id_mapping)
            workdir = request.workdir or state.workdir
            info = await self._store.commit(
                request.name, base_digest, layer, env=dict(state.env),
                working_dir=workdir, user=request.user, kernels=kernels,
                on_progress=self._log)
            return info.digest, info.size_bytes, kernels
        finally:
            try:
                await self._sandboxes.delete(sandbox.id)
            finally:
                if work is not None:
                    await asyncio.to_thread(shutil.rmtree, work, True)

    async def _step(self, sandbox: Sandbox, index: int, total: int, step: BuildStep,
                    state: _State) -> None:
        prefix = f"step {index}/{total}"
        label = step_label(step)
        if step.run is not None:
            self._log(f"{prefix}: run ({step.user or 'root'}): {step.run}")
        else:
            self._log(f"{prefix}: {label}")
        started = time.monotonic()
        try:
            code = await self._perform(sandbox, step, state)
        except QboxError as exc:
            raise BuildFailed(f"{prefix} ({label}) failed: {exc.message}", index) from exc
        except BuildFailed as exc:
            raise BuildFailed(f"{prefix} ({label}) failed: {exc.message}", index) from exc
        self._log(f"{prefix}: exit code {code} ({time.monotonic() - started:.1f} s)")
        if code != 0:
            raise BuildFailed(f"{prefix} ({label}) exited with code {code}", index)

    async def _perform(self, sandbox: Sandbox, step: BuildStep, state: _State) -> int:
        if step.env is not None:
            state.env.update(step.env)
            return 0
        if step.workdir is not None:
            files = await asyncio.to_thread(self._sandboxes.files_owned_by, sandbox.id, "root")
            await asyncio.to_thread(files.mkdir, step.workdir, parents=True)
            state.cwd = state.workdir = step.workdir
            return 0
        if step.copy_ is not None:
            copy = step.copy_
            files = await asyncio.to_thread(self._sandboxes.files_owned_by, sandbox.id, copy.user)
            await files.write(copy.path, [_copy_content(step)], mode=copy.mode,
                              create_parents=True)
            return 0
        assert step.run is not None
        return await self._run_command(sandbox, step.run, step.user or "root", state)

    async def _run_command(self, sandbox: Sandbox, command: str, user: str,
                           state: _State) -> int:
        record = await self._sandboxes.start_command(
            sandbox.id, ["/bin/sh", "-c", command], env=dict(state.env), cwd=state.cwd,
            user=user)
        partial = {"stdout": "", "stderr": ""}
        async for event in follow(record):
            if isinstance(event, OutputEvent):
                stream = event.type
                *lines, partial[stream] = (partial[stream] + event.data).split("\n")
                for line in lines:
                    self._log(line)
        for rest in partial.values():
            if rest:
                self._log(rest)
        if record.signal:
            return 128 + record.signal
        return record.exit_code


class _Refused(BuildFailed):
    """The request names an image that cannot be read (a validation error, not a failure)."""


def _credentials(request: BuildRequest) -> RegistryCredentials | None:
    login = request.credentials
    if login is None:
        return None
    return RegistryCredentials(login.username, login.password.get_secret_value())
