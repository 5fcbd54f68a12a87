"""The control plane's app factory.

Nothing happens at import time: the engine, the agent clients and the
background loops are built in the lifespan from the settings passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import FastAPI

from qbox._version import __version__
from qbox.core.asgi import install_error_handlers
from qbox.core.errors import HostUnavailableError
from qbox.protocol.host import Health
from qbox.server.agent_client import AgentClient, AgentEndpoint
from qbox.server.db.engine import make_async_engine, make_sessionmaker, migrate
from qbox.server.http import (
    api_keys,
    audit,
    build_contexts,
    cluster,
    code,
    envs,
    files,
    hosts,
    openapi,
    ports,
    preview,
    processes,
    quotas,
    sandboxes,
    shell,
    system,
    templates,
    templates_git,
    users,
    web_auth,
)
from qbox.server.http.auditing import AuditMiddleware
from qbox.server.http.body import InputEdgeMiddleware
from qbox.server import web
from qbox.server.services import bootstrap
from qbox.server.services.cluster_ca import ensure_ca
from qbox.server.services.context import AgentFactory, AgentPool, ServiceContext
from qbox.server.services.hostsync import sync_host, sync_hosts
from qbox.server.services.periodic import Periodic
from qbox.server.services.pools import REFILL_SECONDS
from qbox.server.services.preview import PreviewDomain
from qbox.server.services.registry import Services
from qbox.server.services.template_builds import HEARTBEAT_SECONDS, STALE_SWEEP_SECONDS
from qbox.server.settings import ServerSettings

log = logging.getLogger("qbox.server")

LOCAL_HOST_ID = "local"
AUDIT_PRUNE_SECONDS = 3600.0


@dataclass
class Startup:
    """What the lifespan does besides serving: used by ``qbox up`` and by tests."""

    # Built-in templates to register: name -> image ref the agent can import.
    builtin_templates: dict[str, str] = field(default_factory=dict)
    # Their runtime when not crun (e.g. {"python-gvisor": "runsc"}).
    builtin_runtimes: dict[str, str] = field(default_factory=dict)
    on_progress: Callable[[str], None] = lambda line: log.info("%s", line)
    # Called once with the whole first admin (key, password, their files): what qbox up prints.
    on_first_admin: Callable[[bootstrap.AdminBootstrap], None] | None = None
    # Replaces the HTTP client to the local agent (tests pass an in-process one).
    local_agent: AgentClient | None = None
    # Run without an embedded agent: hosts join with tokens (`qbox server` with no
    # QBOX_AGENT_ADDRESS).
    embedded_agent: bool = True
    # Makes the clients of joined hosts from (address, secret); tests route them in-process.
    agent_factory: AgentFactory | None = None
    # The sandbox loops (reaper, host sync) and audit retention; unit tests drive them by hand.
    run_sandbox_loops: bool = True
    agent_wait_seconds: float = 30.0


def _local_agent(settings: ServerSettings) -> AgentClient:
    secret = settings.agent_secret
    if secret is None:
        secret = (settings.data_dir / "agent-secret").read_text().strip()
    return AgentClient(AgentEndpoint(settings.resolved_agent_address(), secret))


def _periodic_tasks(services: Services, startup: Startup) -> list[Periodic]:
    """Each background task as its own loop."""
    settings = services.ctx.settings
    builds = services.templates.builds
    loops = [
        Periodic("build lease refresh", HEARTBEAT_SECONDS, builds.refresh_leases,
                 first_delay=HEARTBEAT_SECONDS),
        # Builds that died with their process were failed at start; later ones are found here.
        Periodic("stale build sweep", STALE_SWEEP_SECONDS, builds.expire_stale,
                 first_delay=STALE_SWEEP_SECONDS),
    ]
    if not startup.run_sandbox_loops:
        return loops
    loops += [
        Periodic("reaper", settings.reaper_interval_seconds, services.reaper.sweep),
        Periodic("host sync", settings.host_sync_interval_seconds,
                 lambda: sync_hosts(services.ctx, services.lifecycle)),
        Periodic("host monitor", min(1.0, settings.host_heartbeat_seconds / 2),
                 services.host_monitor.tick),
        Periodic("warm pools", REFILL_SECONDS, services.pools.tick, wake=services.pools.wake),
    ]
    if settings.audit_retention_days:
        retention = timedelta(days=settings.audit_retention_days)
        loops.append(Periodic("audit retention", AUDIT_PRUNE_SECONDS,
                              lambda: services.audit.prune(retention)))
    return loops


async def _wait_for_agent(agent: AgentClient, seconds: float) -> Health:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await agent.health()
        except HostUnavailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _add_embedded_host(ctx: ServiceContext, services: Services, startup: Startup) -> None:
    """qbox up's own agent: registered as host ``local``, its templates, and reconcile."""
    settings = ctx.settings
    agent = startup.local_agent or _local_agent(settings)
    health = await _wait_for_agent(agent, startup.agent_wait_seconds)
    ctx.agents.add(LOCAL_HOST_ID, agent)
    await bootstrap.ensure_host(ctx, LOCAL_HOST_ID, socket.gethostname(),
                                settings.resolved_agent_address(), health)
    for name, ref in startup.builtin_templates.items():
        await services.templates.ensure_builtin(name, ref, LOCAL_HOST_ID,
                                                runtime=startup.builtin_runtimes.get(name, "crun"),
                                                on_progress=startup.on_progress)
    decided = await sync_host(ctx, services.lifecycle, LOCAL_HOST_ID, at_start=True)
    if decided.ended or decided.strangers:
        startup.on_progress(
            f"reconcile: {len(decided.ended)} sandbox(es) marked lost, "
            f"{len(decided.strangers)} unknown container(s) removed")


def create_app(settings: ServerSettings | None = None, startup: Startup | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    startup = startup or Startup()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url()
        await asyncio.to_thread(migrate, url)
        engine = make_async_engine(url)
        ctx = ServiceContext(settings=settings, sessions=make_sessionmaker(engine),
                             agents=AgentPool())
        services = Services.build(ctx)
        app.state.services = services
        services.audit.start()
        loops: list[Periodic] = []
        try:
            interrupted = await services.templates.fail_interrupted_builds()
            if interrupted:
                startup.on_progress(f"templates: {interrupted} interrupted build(s) marked failed")
            admin = await bootstrap.ensure_admin(ctx)
            if admin.created and startup.on_first_admin:
                startup.on_first_admin(admin)
            # The cluster CA, made at the first start: it signs joining hosts' certificates,
            # and https agents' certificates are checked against it.
            ctx.agents.ca_pem = (await ensure_ca(ctx)).cert_pem
            ctx.agents.factory = startup.agent_factory
            if startup.embedded_agent:
                await _add_embedded_host(ctx, services, startup)
            loops = _periodic_tasks(services, startup)
            for loop in loops:
                loop.start()
            yield
        finally:
            for loop in loops:
                await loop.stop()
            await services.templates.shutdown()
            await services.pools.shutdown()
            await services.sandboxes.shutdown()
            await services.audit.stop()
            await ctx.agents.aclose()
            await engine.dispose()

    app = FastAPI(
        title="qbox",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.add_middleware(InputEdgeMiddleware, max_body_bytes=settings.max_json_body_bytes,
                       max_url_bytes=settings.max_url_bytes)
    # Inside the request-id middleware, outside the error handlers: it sees final statuses.
    app.add_middleware(AuditMiddleware)
    install_error_handlers(app)
    # templates_git before templates: POST /v1/templates/from-git is no {template_id}.
    for module in (system, sandboxes, processes, files, code, shell, templates_git, templates, api_keys,
                   users, quotas,
                   audit, web_auth, hosts, envs):
        app.include_router(module.router)
    app.include_router(hosts.tokens_router)
    app.include_router(hosts.agents_router)
    app.include_router(cluster.router)
    app.include_router(ports.router)
    app.include_router(build_contexts.router)
    web.install(app)
    openapi.install(app)
    # Last, so outermost: preview hosts never reach the API's or the dashboard's middleware.
    preview.install(app, PreviewDomain.from_settings(settings))
    return app
