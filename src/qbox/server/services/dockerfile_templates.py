"""Templates built from a Dockerfile (and, through services/git_sources.py, from git).

The Dockerfile and its build context (a tar) are stored with the template, so a
rebuild builds the same inputs again; the build itself runs on a host agent with
buildah (agent/images/dockerfile.py) and its image then takes the path every
template's image takes (the store, the registry, the template ``ready``).
"""

from __future__ import annotations

from dataclasses import dataclass

from qbox.server.db.tables import Template
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext

__all__ = ["DockerfileTemplateSpec", "DockerfileTemplates"]


@dataclass(frozen=True)
class DockerfileTemplateSpec:
    name: str
    dockerfile: str                 # the Dockerfile's text
    context: bytes                  # a tar (plain or gzip) of the build context
    build_args: dict[str, str]
    default_vcpus: int = 1
    default_memory_mb: int = 512
    default_disk_mb: int = 2048
    ready_timeout_s: int = 30
    enable_ssh: bool = False
    allow_internet_access: bool = True
    tags: tuple[str, ...] = ()
    start_cmd: str | None = None
    ready_cmd: str | None = None
    source: str = "dockerfile"      # or "git"
    git_url: str | None = None
    git_ref: str | None = None
    resolved_commit_sha: str | None = None
    dockerfile_path: str | None = None
    context_path: str | None = None
    build_key: str | None = None


class DockerfileTemplates:
    def __init__(self, ctx: ServiceContext, templates: object) -> None:
        self.ctx = ctx
        self.templates = templates

    async def create(self, principal: Principal, spec: DockerfileTemplateSpec) -> Template:
        """Validate (a name in use: 409; caps, the Dockerfile, the context: 400), store the
        context as a BuildContext row, write the template (``building``) and start its build."""
        raise NotImplementedError

    async def copy_ready(self, principal: Principal, spec: DockerfileTemplateSpec,
                         source: Template) -> Template:
        """A new ``ready`` template reusing ``source``'s built image (a cache hit): no build,
        ``built_from_template_id = source.id``."""
        raise NotImplementedError
