"""The services of one control-plane process, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from qbox.server.services.context import ServiceContext
from qbox.server.services.processes import ProcessService
from qbox.server.services.reaper import Reaper
from qbox.server.services.sandboxes import SandboxService
from qbox.server.services.templates import TemplateService


@dataclass
class Services:
    ctx: ServiceContext
    sandboxes: SandboxService
    processes: ProcessService
    templates: TemplateService
    reaper: Reaper

    @classmethod
    def build(cls, ctx: ServiceContext) -> Services:
        sandboxes = SandboxService(ctx)
        return cls(
            ctx=ctx,
            sandboxes=sandboxes,
            processes=ProcessService(ctx, sandboxes),
            templates=TemplateService(ctx),
            reaper=Reaper(ctx, sandboxes),
        )
