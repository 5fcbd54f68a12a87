"""Template builds: one background task per build, driving a host agent's build stream.

The agent pulls the image, runs the steps in a build sandbox and commits
the result (docs/agent-protocol.md, POST /builds). Here its ``log`` events
become rows of ``template_build_logs`` (written in batches, capped, so the
end of a long log — where a failing step's output is — is always kept) and
its ``result`` or ``error`` settles the template. Registry credentials live
only in the task's memory, for the pull.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

import pydantic
from pydantic import SecretStr

from qbox.core.errors import QboxError, ValidationError
from qbox.protocol import images as wire
from qbox.server.agent_client import AgentClient
from qbox.server.db.tables import BuildContext, Host, Template, TemplateBuildLog
from qbox.server.services.context import ServiceContext
from qbox.server.services.hosts import READY, hold_image
from qbox.server.services.periodic import each

log = logging.getLogger("qbox.templates")

FLUSH_SECONDS = 0.25
# A running build touches its template this often (its lease); one untouched for
# STALE_SECONDS has lost its process (another replica's, or ours before a crash) and is
# marked failed. Both are periodic loops started with the app.
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 45.0
STALE_SWEEP_SECONDS = STALE_SECONDS / 3
MAX_LOG_BYTES = 5 * 1024 * 1024
KEPT_TAIL_LINES = 200
_MAX_LINE_CHARS = 64 * 1024
SHUTDOWN_ERROR = "build interrupted: control plane shutting down; rebuild it"
RESTART_ERROR = "build interrupted: control plane restarted; rebuild it"
CODE_INTERPRETER = "code-interpreter"
# Templates built by buildah from a Dockerfile (services/dockerfile_templates.py).
DOCKERFILE_SOURCES = ("dockerfile", "git")
DOCKERFILE_BUILD_TIMEOUT_SECONDS = 3600
# The second gc after a deletion runs this long after the agents' grace ends.
GC_FOLLOW_UP_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials for one pull; the password never appears in a repr."""

    username: str
    password: str = field(repr=False)

    def to_agent(self) -> wire.RegistryLogin:
        return wire.RegistryLogin(username=self.username, password=SecretStr(self.password))


class BuildLogWriter:
    """Appends one build's lines in batches; past ``MAX_LOG_BYTES`` only the last lines are kept."""

    def __init__(self, ctx: ServiceContext, template_id: str, generation: int) -> None:
        self.ctx = ctx
        self.template_id = template_id
        self.generation = generation
        self._pending: list[str] = []
        self._stored_bytes = 0
        self._tail: collections.deque[str] = collections.deque(maxlen=KEPT_TAIL_LINES)
        self._overflow = 0
        # The template went away (deleted, maybe by another replica, or deleted and made
        # anew: another generation): stop building.
        self.gone = False
        self._stopped = asyncio.Event()

    def add(self, line: str) -> None:
        line = line[:_MAX_LINE_CHARS]
        size = len(line.encode()) + 1
        if self._overflow == 0 and self._stored_bytes + size <= MAX_LOG_BYTES:
            self._stored_bytes += size
            self._pending.append(line)
        else:
            self._overflow += 1
            self._tail.append(line)

    async def flush(self) -> None:
        if not self._pending or self.gone:
            return
        lines, self._pending = self._pending, []
        now = self.ctx.clock()
        try:
            async with self.ctx.sessions() as session:
                template = await session.get(Template, self.template_id)
                if (template is None or template.status == "deleted"
                        or template.build_generation != self.generation):
                    self.gone = True
                    return
                session.add_all(TemplateBuildLog(template_id=self.template_id,
                                                 generation=self.generation, time=now, line=line)
                                for line in lines)
                await session.commit()
        except Exception:  # noqa: BLE001 - a lost batch must not end the build's bookkeeping
            log.exception("could not store build log lines of %s", self.template_id)

    async def run(self) -> None:
        """Flush every FLUSH_SECONDS until ``stop()``; never cancelled mid-write (a batch
        taken from ``_pending`` and then cancelled would be lost)."""
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), FLUSH_SECONDS)
            await self.flush()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        """Write what is left: the kept tail after a marker saying how much was dropped."""
        omitted = self._overflow - len(self._tail)
        if omitted > 0:
            self._pending.append(f"… {omitted} lines omitted …")
        self._pending.extend(self._tail)
        self._tail.clear()
        self._overflow = 0
        await self.flush()


def build_request(template: Template, build_memory_mb: int, registry: str | None,
                  login: RegistryLogin | None, context_id: str | None = None) -> wire.BuildRequest:
    """The agent's BuildRequest for the template's current generation (a template the
    agent would refuse is a ValidationError, as the agent's answer would be). A Dockerfile
    template's context was sent as ``context_id`` first (None: it has none)."""
    push = None
    if registry:
        push = f"{registry.rstrip('/')}/templates/{template.name}:build-{template.build_generation}"
    dockerfile = None
    if template.source in DOCKERFILE_SOURCES:
        dockerfile = {"dockerfile": template.dockerfile or "", "buildArgs": dict(template.build_args),
                      "contextId": context_id, "allowInternetAccess": template.allow_internet_access,
                      "timeoutSeconds": DOCKERFILE_BUILD_TIMEOUT_SECONDS}
    try:
        return wire.BuildRequest.model_validate({
            "name": template.name,
            "ref": "" if dockerfile else template.image_ref,
            "dockerfile": dockerfile,
            "credentials": login.to_agent() if login else None,
            "steps": list(template.steps),
            "user": template.default_user or "user",
            "workdir": template.workdir,
            "env": dict(template.envs),
            "runtime": template.runtime,
            "vcpus": template.default_vcpus,
            "memoryMb": max(template.default_memory_mb, build_memory_mb),
            "diskMb": template.default_disk_mb,
            "push": push,
        })
    except pydantic.ValidationError as exc:
        fields = {".".join(str(part) for part in error["loc"]): error["msg"]
                  for error in exc.errors()}
        raise ValidationError.for_fields(fields) from None


class TemplateBuilds:
    """The builds this process runs, and image garbage collection on the hosts."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The generation each running build builds: its lease is on that generation only.
        self._generations: dict[str, int] = {}
        self._gc_tasks: set[asyncio.Task[None]] = set()
        # A collection was asked for while something was building; it runs after the build.
        self._gc_pending = False

    def start(self, template_id: str, generation: int, login: RegistryLogin | None,
              host_id: str | None = None) -> None:
        """Build in the background; on ``host_id`` when its image ref is that host's own."""
        task = asyncio.create_task(self._run(template_id, generation, login, host_id),
                                   name=f"build {template_id}#{generation}")
        self._tasks[template_id] = task
        self._generations[template_id] = generation
        task.add_done_callback(functools.partial(self._forget, template_id))

    def _forget(self, template_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(template_id) is task:
            del self._tasks[template_id]
            del self._generations[template_id]

    async def cancel(self, template_id: str) -> None:
        task = self._tasks.get(template_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def fail_stale(self, older_than: datetime | None) -> int:
        """Fail builds whose process is gone: untouched since ``older_than`` (None: every one)."""
        now = self.ctx.clock()
        query = update(Template).where(Template.status == "building", Template.builtin.is_(False))
        if older_than is not None:
            query = query.where(Template.updated_at < older_than)
        async with self.ctx.sessions() as session:
            result = await session.execute(query.values(
                status="failed", build_error=RESTART_ERROR, build_finished_at=now, updated_at=now))
            await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    async def expire_stale(self) -> int:
        """One sweep: fail the builds whose lease was not refreshed for STALE_SECONDS."""
        failed = await self.fail_stale(self.ctx.clock() - timedelta(seconds=STALE_SECONDS))
        if failed:
            log.warning("%d build(s) without a live process marked failed", failed)
        return failed

    async def refresh_leases(self) -> None:
        """Touch the template of every build this process runs, each on its own."""
        await each("build lease of", list(self._generations.items()), self._refresh_lease)

    async def _refresh_lease(self, build: tuple[str, int]) -> None:
        template_id, generation = build
        async with self.ctx.sessions() as session:
            await session.execute(
                update(Template)
                .where(Template.id == template_id, Template.build_generation == generation,
                       Template.status == "building")
                .values(updated_at=self.ctx.clock()))
            await session.commit()

    async def shutdown(self) -> None:
        tasks = [*self._tasks.values(), *self._gc_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one build -----------------------------------------------------------

    async def _run(self, template_id: str, generation: int, login: RegistryLogin | None,
                   host_id: str | None) -> None:
        writer = BuildLogWriter(self.ctx, template_id, generation)
        flusher = asyncio.create_task(writer.run(), name=f"build log {template_id}")
        outcome: dict[str, Any]
        try:
            outcome = await self._drive(template_id, writer, login, host_id)
        except asyncio.CancelledError:
            await self._settle(flusher, writer, template_id, generation,
                               {"status": "failed", "build_error": SHUTDOWN_ERROR})
            raise
        except Exception as exc:  # noqa: BLE001 - any failure must end in `failed`, never a hang
            log.exception("build of %s crashed", template_id)
            outcome = {"status": "failed", "build_error": f"build failed: internal error ({exc!r})"}
        await self._settle(flusher, writer, template_id, generation, outcome)
        if outcome["status"] == "ready" and (generation > 1 or self._gc_pending):
            # The previous image (or one a deletion left behind) is garbage now.
            await self.collect_garbage()
        elif self._gc_pending:
            await self.collect_garbage()

    async def _settle(self, flusher: asyncio.Task[None], writer: BuildLogWriter, template_id: str,
                      generation: int, values: dict[str, Any]) -> None:
        # The log is complete before the status changes: a follower stops at the status.
        writer.stop()
        await asyncio.wait({flusher})
        await writer.close()
        now = self.ctx.clock()
        async with self.ctx.sessions() as session:
            await session.execute(
                update(Template)
                .where(Template.id == template_id, Template.build_generation == generation,
                       Template.status == "building")
                .values(**values, build_finished_at=now, updated_at=now))
            await session.commit()
        if values["status"] == "ready":
            log.info("template %s built (%s)", template_id, values.get("image_digest"))
        else:
            log.warning("build of %s failed: %s", template_id, values.get("build_error"))

    async def _drive(self, template_id: str, writer: BuildLogWriter,
                     login: RegistryLogin | None, pinned: str | None) -> dict[str, Any]:
        async with self.ctx.sessions() as session:
            template = await session.get(Template, template_id)
            if template is None or template.status != "building":
                return {"status": "failed", "build_error": "template deleted"}
            host_id, agent = await self._pick_agent(session, pinned)
        if agent is None:
            return {"status": "failed", "build_error": "no host is online to build the template"}
        settings = self.ctx.settings
        source = template.image_ref
        if template.source in DOCKERFILE_SOURCES:
            source = "a Dockerfile" if template.source == "dockerfile" else template.git_url or "git"
        writer.add(f"building {source} on host {host_id} (build {template.build_generation})")
        try:
            context_id = await self._send_context(template, agent)
            events = await agent.images.build(build_request(
                template, settings.build_memory_mb, settings.registry, login, context_id))
        except QboxError as exc:
            writer.add(f"build failed: {exc.message}")
            return {"status": "failed", "build_error": exc.message}
        try:
            async for event in events:
                if isinstance(event, wire.BuildLog):
                    writer.add(event.line)
                elif isinstance(event, wire.BuildResult):
                    await hold_image(self.ctx, host_id, event.digest)
                    return _ready(event)
                else:
                    return {"status": "failed", "build_error": event.message or "build failed"}
                if writer.gone:
                    return {"status": "failed", "build_error": "template deleted"}
        finally:
            await events.aclose()
        message = f"build failed: lost the connection to host {host_id} before the build ended"
        writer.add(message)
        return {"status": "failed", "build_error": message}

    async def _send_context(self, template: Template, agent: AgentClient) -> str | None:
        """A Dockerfile template's stored context, streamed to the agent that builds it."""
        if template.source not in DOCKERFILE_SOURCES or not template.build_context_id:
            return None
        async with self.ctx.sessions() as session:
            context = await session.get(BuildContext, template.build_context_id)
            if context is None:
                raise ValidationError("the template's build context is gone; create it again")
            data, sha256 = context.data, context.sha256
        context_id = "ctx_" + secrets.token_hex(12)
        await agent.images.put_build_context(context_id, sha256, data)
        return context_id

    async def _pick_agent(self, session: Any, pinned: str | None) -> tuple[str, AgentClient | None]:
        """A ready host that is not drained (the image then travels by the registry); only
        ``pinned`` when given."""
        query = select(Host.id).where(Host.status == READY, Host.draining.is_(False), Host.removed_at.is_(None))
        if pinned is not None:
            query = query.where(Host.id == pinned)
        hosts = (await session.execute(query.order_by(Host.id))).scalars().all()
        for host_id in hosts:
            if host_id in self.ctx.agents.clients:
                return host_id, self.ctx.agents.clients[host_id]
        return "", None

    # --- garbage collection ----------------------------------------------------

    def request_gc(self) -> None:
        """Collect unused images on every host, in the background (best effort): now, and
        once more when the agents' grace for recently stored images has passed."""
        task = asyncio.create_task(self._collect_twice(), name="image gc")
        self._gc_tasks.add(task)
        task.add_done_callback(self._gc_tasks.discard)

    async def _collect_twice(self) -> None:
        await self.collect_garbage()
        await asyncio.sleep(self.ctx.settings.image_gc_grace_seconds + GC_FOLLOW_UP_MARGIN_SECONDS)
        await self.collect_garbage()

    async def collect_garbage(self) -> None:
        async with self.ctx.sessions() as session:
            building = (await session.execute(
                select(Template.id).where(Template.status == "building").limit(1))).first()
            if building is not None:
                # A build's base image is in no row yet: collecting now could remove it.
                self._gc_pending = True
                return
            rows = (await session.execute(
                select(Template.image_digest, Template.base_digest))).all()
        self._gc_pending = False
        keep = sorted({digest for row in rows for digest in row if digest})
        for host_id, agent in list(self.ctx.agents.clients.items()):
            try:
                result = await agent.images.collect(keep)
            except QboxError as exc:
                log.warning("image gc on host %s failed: %s", host_id, exc.message)
                continue
            except Exception:  # noqa: BLE001 - best effort: one host's failure is only logged
                log.exception("image gc on host %s crashed", host_id)
                continue
            log.info("image gc on host %s: %d image(s) removed, %d bytes freed", host_id,
                     len(result.removed), result.freed_bytes)


def services_for(kernels: list[wire.KernelSpec]) -> list[dict[str, str]]:
    """The services a template offers, from what its image holds (its Jupyter kernels)."""
    if not kernels:
        return []
    languages = sorted({kernel.language for kernel in kernels} - {""})
    return [{"name": CODE_INTERPRETER, "type": CODE_INTERPRETER,
             "version": "jupyter:" + ",".join(languages)}]


def has_code_interpreter(template: Template | None) -> bool:
    return template is not None and any(s.get("type") == CODE_INTERPRETER
                                        for s in template.services)


def _ready(event: wire.BuildResult) -> dict[str, Any]:
    image: dict[str, Any] = {}
    if event.image_user is not None:
        # A Dockerfile's image: its sandboxes run as its USER, in its WORKDIR.
        image = {"default_user": event.image_user or "root", "workdir": event.image_workdir or None}
    return {
        **image,
        "status": "ready",
        "build_error": None,
        "image_digest": event.digest,
        "size_bytes": event.size_bytes,
        "services": services_for(event.kernels),
        "base_digest": event.base_digest,
        "registry_ref": event.pushed_ref or "",
    }
