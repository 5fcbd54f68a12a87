"""The services of one control-plane process, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from qbox.server.services.audit import AuditService
from qbox.server.services.code import CodeService
from qbox.server.services.context import ServiceContext
from qbox.server.services.dockerfile_templates import DockerfileTemplates
from qbox.server.services.envs import EnvService
from qbox.server.services.files import FileService
from qbox.server.services.git_templates import GitTemplates
from qbox.server.services.host_credentials import AgentSecrets
from qbox.server.services.host_join import HostJoins
from qbox.server.services.host_monitor import HostMonitor
from qbox.server.services.hosts import HostService
from qbox.server.services.keys import KeyService
from qbox.server.services.lifecycle import SandboxLifecycle
from qbox.server.services.placement import Placement
from qbox.server.services.pools import WarmPools
from qbox.server.services.ports import PortService
from qbox.server.services.processes import ProcessService
from qbox.server.services.quotas import QuotaService
from qbox.server.services.ratelimit import RateLimiter
from qbox.server.services.reaper import Reaper
from qbox.server.services.sandbox_startup import SandboxBoots
from qbox.server.services.sandboxes import SandboxService
from qbox.server.services.shells import ShellService
from qbox.server.services.templates import TemplateService
from qbox.server.services.users import UserService
from qbox.server.services.web_sessions import WebSessionService
from qbox.server.settings import ServerSettings


@dataclass
class Limits:
    requests: RateLimiter
    spawns: RateLimiter
    auth_failures: RateLimiter

    @classmethod
    def from_settings(cls, s: ServerSettings) -> Limits:
        return cls(
            requests=RateLimiter(s.rate_limit_requests_per_second, s.rate_limit_request_burst),
            spawns=RateLimiter(s.rate_limit_spawns_per_second, s.rate_limit_spawn_burst),
            auth_failures=RateLimiter(s.rate_limit_auth_failures_per_minute / 60, s.rate_limit_auth_failure_burst),
        )


@dataclass
class Services:
    ctx: ServiceContext
    lifecycle: SandboxLifecycle
    sandboxes: SandboxService
    quotas: QuotaService
    processes: ProcessService
    files: FileService
    code: CodeService
    templates: TemplateService
    reaper: Reaper
    keys: KeyService
    users: UserService
    web_sessions: WebSessionService
    shells: ShellService
    audit: AuditService
    limits: Limits
    hosts: HostService
    joins: HostJoins
    host_monitor: HostMonitor
    pools: WarmPools
    dockerfile_templates: DockerfileTemplates
    git_templates: GitTemplates
    envs: EnvService
    ports: PortService

    @classmethod
    def build(cls, ctx: ServiceContext) -> Services:
        shells = ShellService(ctx)
        quotas = QuotaService(ctx)
        lifecycle = SandboxLifecycle(ctx)
        boots = SandboxBoots(ctx, lifecycle)
        # An ended sandbox's shells close, and its start command is no longer followed.
        lifecycle.when_ended(shells.close_for_sandbox)
        lifecycle.when_ended(boots.stop_following)
        pools = WarmPools(ctx, Placement(ctx))
        sandboxes = SandboxService(ctx, lifecycle, boots, quotas, pools)
        audit = AuditService(ctx)
        agent_secrets = AgentSecrets(ctx)
        templates = TemplateService(ctx, pools)
        dockerfile_templates = DockerfileTemplates(ctx, templates)
        return cls(
            ctx=ctx,
            lifecycle=lifecycle,
            sandboxes=sandboxes,
            quotas=quotas,
            processes=ProcessService(ctx, sandboxes),
            files=FileService(ctx, sandboxes),
            code=CodeService(ctx, sandboxes),
            templates=templates,
            reaper=Reaper(ctx, lifecycle, audit),
            keys=KeyService(ctx, shells),
            users=UserService(ctx, shells),
            web_sessions=WebSessionService(ctx),
            shells=shells,
            audit=audit,
            limits=Limits.from_settings(ctx.settings),
            hosts=HostService(ctx, lifecycle),
            joins=HostJoins(ctx, agent_secrets, templates.ensure_fleet_builtin),
            host_monitor=HostMonitor(ctx, lifecycle, agent_secrets),
            pools=pools,
            dockerfile_templates=dockerfile_templates,
            git_templates=GitTemplates(ctx, dockerfile_templates),
            envs=EnvService(ctx, sandboxes, lifecycle),
            ports=PortService(ctx, sandboxes),
        )
