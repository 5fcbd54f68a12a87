"""The host agent's internal API (docs/agent-protocol.md): thin handlers over the managers.

``create_app`` builds nothing at import time. The lifespan prepares the host
(once per start), picks the runtime, and loads the sandboxes an earlier agent
left; tests pass a fake runtime and a fake image store instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from qbox._version import __version__
from qbox.agent import cgroups
from qbox.agent.builds_api import builds_router
from qbox.agent.capacity import host_capacity
from qbox.agent.code_api import code_router
from qbox.agent.deadlines import enforce_deadlines
from qbox.agent.command_stream import NDJSON, LogsQuery, exec_answer, logs_answer, ndjson_response
from qbox.agent.files_api import files_router
from qbox.agent.host_names import HostNames
from qbox.agent.hostprep import prepare_host
from qbox.agent.images.build import KernelSource, image_kernels
from qbox.agent.images.store import ImageStore
from qbox.agent.isolation import policy_for
from qbox.agent.network import SandboxNetwork, create_network
from qbox.agent.ports_api import PortRelays, ports_router
from qbox.agent.processes import ProcessRecord, follow
from qbox.agent.rootfs import SandboxFilesystem
from qbox.agent.runtime.base import RuntimeCapability, RuntimeDriver
from qbox.agent.runtime.factory import create_runsc, create_runtime, filesystem_for
from qbox.agent.sandbox import Sandbox, SandboxParams
from qbox.agent.sandbox_images import ImageInfoLike, ImageSource
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSecret, AgentSettings, load_or_create_secret
from qbox.agent.shell_api import check_secret, shell_router
from qbox.agent.usage import UsageMeter
from qbox.core.asgi import install_error_handlers
from qbox.core.disconnects import gone, unless_disconnected
from qbox.protocol.host import Capacity, Health, Usage
from qbox.protocol.images import ImageImport, ImageImported, ImageInfo, ImagesCollected, ImagesGc
from qbox.protocol.processes import (
    CommandStart,
    CommandStarted,
    CommandStatus,
    ExecRequest,
    StdinWrite,
)
from qbox.protocol.sandboxes import (
    SandboxClaim,
    SandboxCreated,
    SandboxDeadline,
    SandboxEnvs,
    SandboxInfo,
    SandboxSpec,
)

log = logging.getLogger("qbox.agent")

PREFIX = "/internal/v1"


class ImageStoreLike(ImageSource, KernelSource, Protocol):
    """What the API needs of ``qbox.agent.images.ImageStore`` (beyond what sandboxes need)."""

    def has(self, digest: str) -> bool: ...

    def info(self, digest: str) -> ImageInfoLike: ...

    def rootfs_path(self, digest: str) -> Path: ...

    async def gc(self, keep: set[str], in_use: set[str], *,
                 grace_seconds: float = 0.0) -> tuple[list[str], int]: ...

    def digests(self) -> list[str]: ...


@dataclass
class AgentState:
    settings: AgentSettings
    runtime: RuntimeDriver
    images: ImageStoreLike
    sandboxes: SandboxManager
    usage: UsageMeter


def _agent(request: Request) -> AgentState:
    state: AgentState = request.app.state.agent
    return state


# --- wire shapes -------------------------------------------------------------

def sandbox_info(sandbox: Sandbox) -> SandboxInfo:
    stopped = sandbox.status.value == "stopped"
    return SandboxInfo(id=sandbox.id, status=sandbox.status.value, address=sandbox.address,
                       exit_reason=sandbox.exit_reason if stopped else None)


def command_status(record: ProcessRecord) -> CommandStatus:
    return CommandStatus(pid=record.pid, command=record.command, started_at=record.started_at,
                         alive=record.alive, exit_code=record.exit_code, signal=record.signal,
                         oom_killed=record.oom_killed, ended_at=record.ended_at)


async def host_health(agent: AgentState) -> Health:
    """What this host says of itself (``/health``, and each heartbeat of a joined agent).
    The figures that read files are measured in a worker thread, off the event loop."""
    settings = agent.settings

    def measure() -> tuple[dict[str, int], Usage | None, list[str]]:
        try:
            usage: Usage | None = agent.usage.measure()
        except (OSError, ValueError, KeyError) as exc:  # a /proc without them (a container)
            log.warning("cannot measure this host's usage: %s", exc)
            usage = None
        return (host_capacity(settings.data_dir, settings.sandboxes_dir), usage,
                agent.images.digests())

    capacity, usage, images = await asyncio.to_thread(measure)
    return Health(version=__version__, runtime=agent.runtime.name,
                  runtimes=agent.sandboxes.runtime_names, sandboxes=len(agent.sandboxes),
                  capacity=Capacity.model_validate(capacity), hostname=socket.gethostname(),
                  usage=usage, images=images, max_sandboxes=settings.sandbox_limit,
                  labels=settings.labels, builtin_images=settings.builtin_images)


# --- routes ------------------------------------------------------------------

def _routes() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health(request: Request) -> Health:
        return await host_health(_agent(request))

    @router.post("/images")
    async def import_image(body: ImageImport, request: Request) -> ImageImported:
        images = _agent(request).images
        _agent(request).settings.refuse_own_state(body.ref)
        info = await images.import_image(body.ref, body.name)
        return ImageImported.model_validate({
            "digest": info.digest, "sizeBytes": info.size_bytes,
            "kernels": await image_kernels(images, info.digest)})

    @router.get("/images/{digest}")
    async def get_image(digest: str, request: Request) -> ImageInfo:
        images = _agent(request).images
        info = images.info(digest)
        unpacked = images.has(digest)
        return ImageInfo.model_validate({
            "digest": info.digest, "sizeBytes": info.size_bytes, "unpacked": unpacked,
            "kernels": await image_kernels(images, digest) if unpacked else []})

    @router.post("/images/gc")
    async def collect_images(body: ImagesGc, request: Request) -> ImagesCollected:
        agent = _agent(request)
        removed, freed = await agent.images.gc(set(body.keep),
                                               agent.sandboxes.image_digests_in_use(),
                                               # A control plane computes `keep` before asking;
                                               # a build may store an image in between.
                                               grace_seconds=agent.settings.image_gc_grace_seconds)
        return ImagesCollected(removed=removed, freed_bytes=freed)

    @router.post("/sandboxes", status_code=201)
    async def create_sandbox(body: SandboxSpec, request: Request) -> SandboxCreated:
        sandbox = await _agent(request).sandboxes.create(SandboxParams(
            id=body.id, image_digest=body.image_digest, envs=body.envs, vcpus=body.vcpus,
            memory_mb=body.memory_mb, hostname=body.hostname,
            allow_internet_access=body.allow_internet_access, disk_size_mb=body.disk_size_mb,
            runtime=body.runtime, user=body.user, workdir=body.workdir,
            image_pull_ref=body.image_pull_ref, code_interpreter=body.code_interpreter),
            deadline_at=body.deadline_at)
        return SandboxCreated(id=sandbox.id, booted_at=sandbox.booted_at,
                              address=sandbox.address)

    @router.get("/sandboxes")
    async def list_sandboxes(request: Request) -> list[SandboxInfo]:
        return [sandbox_info(s) for s in _agent(request).sandboxes]

    @router.get("/sandboxes/{sandbox_id}")
    async def get_sandbox(sandbox_id: str, request: Request) -> SandboxInfo:
        return sandbox_info(_agent(request).sandboxes.get(sandbox_id))

    @router.delete("/sandboxes/{sandbox_id}", status_code=204)
    async def delete_sandbox(sandbox_id: str, request: Request) -> Response:
        await _agent(request).sandboxes.delete(sandbox_id)
        return Response(status_code=204)

    @router.put("/sandboxes/{sandbox_id}/deadline", status_code=204)
    async def set_deadline(sandbox_id: str, body: SandboxDeadline,
                           request: Request) -> Response:
        _agent(request).sandboxes.set_deadline(sandbox_id, body.deadline_at)
        return Response(status_code=204)

    @router.put("/sandboxes/{sandbox_id}/envs", status_code=204)
    async def set_envs(sandbox_id: str, body: SandboxEnvs, request: Request) -> Response:
        await _agent(request).sandboxes.set_envs(sandbox_id, body.envs)
        return Response(status_code=204)

    @router.post("/sandboxes/{sandbox_id}/claim")
    async def claim_sandbox(sandbox_id: str, body: SandboxClaim,
                            request: Request) -> SandboxInfo:
        return sandbox_info(await _agent(request).sandboxes.claim(
            sandbox_id, body.envs, body.vcpus, body.memory_mb, body.deadline_at))

    @router.post("/sandboxes/{sandbox_id}/exec", response_model=None)
    async def exec_command(sandbox_id: str, body: ExecRequest, request: Request) -> Response:
        sandboxes = _agent(request).sandboxes
        if NDJSON in request.headers.get("accept", ""):
            record = await sandboxes.start_command(
                sandbox_id, body.argv, env=body.env, cwd=body.cwd, user=body.user,
                stdin=body.stdin, ephemeral=True)
            events = sandboxes.processes(sandbox_id).stream(record, timeout=body.timeout_seconds)
            return ndjson_response(events)
        # A caller that goes away cancels the wait, which kills the command's tree.
        result = await unless_disconnected(request, sandboxes.exec(
            sandbox_id, body.argv, env=body.env, cwd=body.cwd, user=body.user,
            stdin=body.stdin, timeout=body.timeout_seconds))
        if result is None:
            return gone()
        return exec_answer(result)

    @router.post("/sandboxes/{sandbox_id}/commands")
    async def start_command(sandbox_id: str, body: CommandStart,
                            request: Request) -> CommandStarted:
        record = await _agent(request).sandboxes.start_command(
            sandbox_id, body.argv, env=body.env, cwd=body.cwd, user=body.user,
            keep_stdin=body.stdin)
        return CommandStarted(pid=record.pid, started_at=record.started_at)

    @router.get("/sandboxes/{sandbox_id}/commands")
    async def list_commands(sandbox_id: str, request: Request) -> list[CommandStatus]:
        return [command_status(r)
                for r in _agent(request).sandboxes.processes(sandbox_id).list()]

    @router.get("/sandboxes/{sandbox_id}/commands/{pid}")
    async def get_command(sandbox_id: str, pid: int, request: Request) -> CommandStatus:
        return command_status(_agent(request).sandboxes.processes(sandbox_id).get(pid))

    @router.get("/sandboxes/{sandbox_id}/commands/{pid}/logs", response_model=None)
    async def command_logs(sandbox_id: str, pid: int, request: Request,
                           query: LogsQuery = Depends()) -> StreamingResponse:
        record = _agent(request).sandboxes.processes(sandbox_id).get(pid)
        if query.follow:
            offsets = query.offsets
            return ndjson_response(follow(record, offsets.stdout_from, offsets.stderr_from))
        return logs_answer(record, query.offsets)

    @router.post("/sandboxes/{sandbox_id}/commands/{pid}/stdin", status_code=204)
    async def command_stdin(sandbox_id: str, pid: int, body: StdinWrite,
                            request: Request) -> Response:
        await _agent(request).sandboxes.processes(sandbox_id).write_stdin(
            pid, body.data, close=body.close)
        return Response(status_code=204)

    @router.delete("/sandboxes/{sandbox_id}/commands/{pid}", status_code=204)
    async def kill_command(sandbox_id: str, pid: int, request: Request,
                           signal: int = Query(15)) -> Response:
        _agent(request).sandboxes.processes(sandbox_id).kill(pid, signal)
        return Response(status_code=204)

    return router


def _bearer_check(secret: AgentSecret) -> Callable[[Request], Awaitable[None]]:
    async def require_secret(request: Request) -> None:
        check_secret(request, secret.value)

    return require_secret


def create_app(settings: AgentSettings, runtime: RuntimeDriver | None = None,
               store: ImageStoreLike | None = None,
               filesystem: SandboxFilesystem | None = None,
               network: SandboxNetwork | None = None) -> FastAPI:
    """The agent's ASGI app. ``runtime``/``store``/``filesystem``/``network`` replace the
    real ones (tests)."""
    secret = AgentSecret(settings.data_dir,
                         settings.secret or load_or_create_secret(settings.data_dir))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        driver = runtime
        if driver is None:
            if settings.prepare_host and settings.runtime != "fake":
                report = await asyncio.to_thread(prepare_host)
                for problem in report.problems:
                    log.warning("host preparation: %s", problem)
            driver = await create_runtime(settings)
        # gVisor beside the default runtime, when it works here (never with a test's runtime).
        gvisor = await create_runsc(settings) if runtime is None else None
        images: ImageStoreLike = store or ImageStore(
            settings.images_dir, insecure_registries=settings.insecure_registries)
        isolates = RuntimeCapability.ISOLATES in driver.capabilities
        manager = SandboxManager(
            settings, driver, images, filesystem or filesystem_for(driver, settings),
            network or create_network(settings, fake_runtime=not isolates),
            policy_for(driver, settings),
            runtimes={"runsc": gvisor} if gvisor is not None else None)
        await manager.load()
        app.state.agent = AgentState(settings, driver, images, manager,
                                     UsageMeter(settings.data_dir))
        app.state.port_relays = PortRelays()
        deadlines = asyncio.create_task(enforce_deadlines(manager))
        try:
            yield
        finally:
            await app.state.port_relays.aclose()
            deadlines.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadlines
            # Watchers first: a closing runtime ends their waits, which must
            # not be mistaken for sandboxes stopping.
            await manager.close()
            if runtime is None:
                await driver.close()
                # Empty once the last sandbox is gone: no subtree outlives its agent's sandboxes.
                cgroups.remove_parent(HostNames.for_data_dir(settings.data_dir).cgroup_parent)
            if gvisor is not None:
                await gvisor.close()

    app = FastAPI(title="qbox agent", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  default_response_class=JSONResponse)
    install_error_handlers(app)
    # Joining a control plane replaces it (joined_host.py).
    app.state.secret = secret
    app.include_router(_routes(), prefix=PREFIX, dependencies=[Depends(_bearer_check(secret))])
    app.include_router(files_router(), prefix=PREFIX,
                       dependencies=[Depends(_bearer_check(secret))])
    app.include_router(code_router(), prefix=PREFIX,
                       dependencies=[Depends(_bearer_check(secret))])
    app.include_router(builds_router(), prefix=PREFIX,
                       dependencies=[Depends(_bearer_check(secret))])
    # Its own secret check: a dependency on Request does not run for a WebSocket.
    app.include_router(shell_router(secret), prefix=PREFIX)
    app.include_router(ports_router(secret), prefix=PREFIX)
    return app
