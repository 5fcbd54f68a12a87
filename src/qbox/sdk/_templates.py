"""Templates: what sandboxes are created from. Build one from any OCI image, plus steps.

    from qbox import Step, Template

    info = Template.create("py-tools", "python:3.12-slim",
                           steps=[Step.run("pip install httpx"), Step.env(APP_ENV="dev")], wait=True)
    info = Template.from_dockerfile("web", dockerfile="Dockerfile", context=".", wait=True)

``Templates`` / ``AsyncTemplates`` are the same classes under their earlier names.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from qbox.sdk import _template_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._models import CodeInterpreterMode, TemplateInfo, WarmPool
from qbox.sdk._template_ops import AsyncLogCallback, LogCallback, RegistryCredentials, TemplateSpec
from qbox.sdk._template_sources import AsyncTemplateSources, TemplateSources
from qbox.sdk._transport import AsyncConnection, Connection


class Template(TemplateSources):
    @classmethod
    def create(
        cls,
        name: str,
        image_ref: str,
        *,
        steps: Sequence[Mapping[str, Any]] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        ready_timeout_s: int = ops.DEFAULT_READY_TIMEOUT_S,
        default_vcpus: int = ops.DEFAULT_VCPUS,
        default_memory_mb: int = ops.DEFAULT_MEMORY_MB,
        default_disk_mb: int | None = None,
        enable_ssh: bool = False,
        tags: Sequence[str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        allow_internet_access: bool | None = None,
        runtime: str | None = None,
        registry_credentials: RegistryCredentials | None = None,
        public: bool = False,
        host_selector: Mapping[str, str] | None = None,
        code_interpreter: CodeInterpreterMode | None = None,
        warm_pool: WarmPool | int | None = None,
        wait: bool = False,
        on_log: LogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Build template ``name`` from ``image_ref`` (any image reference skopeo reads, e.g.
        ``python:3.12-slim`` or ``oci-archive:/tmp/img.tar``) plus ``steps`` (see ``Step``).

        Returns at once with the template ``building``, unless ``wait=True`` or ``on_log`` is
        given: then the build log is followed (each line to ``on_log``) until the build ends,
        and the ready template is returned. A failed build raises ``TemplateBuildError``
        (``build_error`` says why); one still running after ``timeout`` seconds (``None``: no
        limit) raises ``TemplateBuildTimeoutError``. ``registry_credentials`` (``(user,
        password)``) are used for the pull only, never stored.

        ``host_selector`` (``{"gpu": "true"}``) keeps its sandboxes on hosts carrying every one
        of those labels (see ``set_host_selector``).

        ``code_interpreter``: ``"lazy"`` (the server's default) starts a sandbox's kernel on its
        first code call, so an idle sandbox costs next to nothing; ``"eager"`` starts it at boot.
        ``warm_pool`` (``WarmPool(2)``, or just ``2``; admins only for a size above 0) keeps that
        many sandboxes booted for spawns to claim at once (see ``set_warm_pool``).

        The template is yours: other members neither see nor spawn it unless an admin makes it
        ``public`` (here, or with ``set_public``). Members build from registry images only;
        local sources (``oci:``, ``oci-archive:``, ``docker-archive:``) are for admins, inside
        the server's import directories.
        """
        spec = TemplateSpec(
            name=name, image_ref=image_ref, steps=steps or (), start_cmd=start_cmd, ready_cmd=ready_cmd,
            ready_timeout_s=ready_timeout_s, default_vcpus=default_vcpus, default_memory_mb=default_memory_mb,
            default_disk_mb=default_disk_mb, enable_ssh=enable_ssh, tags=tags or (), user=user, workdir=workdir,
            env=env, allow_internet_access=allow_internet_access, runtime=runtime,
            registry_credentials=registry_credentials, public=public, host_selector=host_selector,
            code_interpreter=code_interpreter, warm_pool=ops.as_warm_pool(warm_pool),
        )  # fmt: skip
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.create_template(conn.api, spec, ops.BuildWait.asked(wait, on_log, timeout)))

    @classmethod
    def list(
        cls,
        *,
        service: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> builtins.list[TemplateInfo]:
        """``GET /v1/templates``; ``service`` keeps templates offering that service type."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_templates(conn.api, service=service))

    @classmethod
    def get(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """One template by ``tpl_…`` id or name."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.get_template(conn.api, template))

    @classmethod
    def set_public(
        cls,
        template: str,
        public: bool = True,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Make a template (id or name) public, or private again: admins only (``PermissionDeniedError``
        otherwise; built-ins stay public)."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.set_template_public(conn.api, template, public))

    @classmethod
    def set_host_selector(
        cls,
        template: str,
        selector: Mapping[str, str],
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Run the template's (id or name) new sandboxes only on hosts carrying every label of
        ``selector`` with its value; ``{}`` lets them run anywhere. Its owner or an admin.
        No host matching is a ``HostNoCapacityError`` at spawn."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.set_host_selector(conn.api, template, selector))

    @classmethod
    def set_warm_pool(
        cls,
        template: str,
        size: int | None = None,
        *,
        eager: bool | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Keep ``size`` sandboxes of the template (id or name) booted for spawns to claim (``0``:
        none); ``eager`` starts their code interpreter too. What is left out stays. A size above
        0 is for admins (``PermissionDeniedError``): a pool holds host capacity every user shares;
        ``eager`` is the owner's or an admin's. ``info.warm_pool`` shows ready/booting/claimed."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.set_warm_pool(conn.api, template, size, eager))

    @classmethod
    def set_code_interpreter(
        cls,
        template: str,
        mode: CodeInterpreterMode,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """``"lazy"``: the template's new sandboxes start their kernel on the first code call;
        ``"eager"``: at boot. Its owner or an admin."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.set_code_interpreter(conn.api, template, mode))

    @classmethod
    def delete(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Delete a template (id or name); ``ConflictError`` while sandboxes use it, or for built-ins."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            conn.run(ops.delete_template(conn.api, template))

    @classmethod
    def rebuild(
        cls,
        template: str,
        *,
        registry_credentials: RegistryCredentials | None = None,
        wait: bool = False,
        on_log: LogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Build the template again from its image ref and steps (pulling the ref afresh); waits as
        ``create`` does."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            waiting = ops.BuildWait.asked(wait, on_log, timeout)
            return conn.run(ops.rebuild_template(conn.api, template, registry_credentials, waiting))

    @classmethod
    def wait(
        cls,
        template: str,
        *,
        on_log: LogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """Wait for the template's build to end: the ready template, or ``TemplateBuildError`` /
        ``TemplateBuildTimeoutError``. Log lines from now on go to ``on_log``."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.wait_for_build(conn.api, template, timeout=timeout, on_log=on_log))

    @classmethod
    def build_log(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> str:
        """The log of the template's current (or last) build, as text."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.build_log(conn.api, template))

    @classmethod
    def follow_build_log(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Iterator[str]:
        """The build log line by line, from its start, as the build writes it; ends with the build
        (at once when it has already ended). No timeout applies while waiting for lines."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            template_id = conn.run(ops.template_id(conn.api, template))
            cursor = conn.run(ops.open_log(conn.api, template_id, timeout=None))
            try:
                while not cursor.finished:
                    yield from conn.run(ops.next_lines(cursor))
            finally:
                conn.run(ops.close_log(cursor))


class AsyncTemplate(AsyncTemplateSources):
    @classmethod
    async def create(
        cls,
        name: str,
        image_ref: str,
        *,
        steps: Sequence[Mapping[str, Any]] | None = None,
        start_cmd: str | None = None,
        ready_cmd: str | None = None,
        ready_timeout_s: int = ops.DEFAULT_READY_TIMEOUT_S,
        default_vcpus: int = ops.DEFAULT_VCPUS,
        default_memory_mb: int = ops.DEFAULT_MEMORY_MB,
        default_disk_mb: int | None = None,
        enable_ssh: bool = False,
        tags: Sequence[str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        allow_internet_access: bool | None = None,
        runtime: str | None = None,
        registry_credentials: RegistryCredentials | None = None,
        public: bool = False,
        host_selector: Mapping[str, str] | None = None,
        code_interpreter: CodeInterpreterMode | None = None,
        warm_pool: WarmPool | int | None = None,
        wait: bool = False,
        on_log: AsyncLogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.create``, awaited (``on_log`` may be an ``async def``)."""
        spec = TemplateSpec(
            name=name, image_ref=image_ref, steps=steps or (), start_cmd=start_cmd, ready_cmd=ready_cmd,
            ready_timeout_s=ready_timeout_s, default_vcpus=default_vcpus, default_memory_mb=default_memory_mb,
            default_disk_mb=default_disk_mb, enable_ssh=enable_ssh, tags=tags or (), user=user, workdir=workdir,
            env=env, allow_internet_access=allow_internet_access, runtime=runtime,
            registry_credentials=registry_credentials, public=public, host_selector=host_selector,
            code_interpreter=code_interpreter, warm_pool=ops.as_warm_pool(warm_pool),
        )  # fmt: skip
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.create_template(conn.api, spec, ops.BuildWait.asked(wait, on_log, timeout)))

    @classmethod
    async def list(
        cls,
        *,
        service: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> builtins.list[TemplateInfo]:
        """``GET /v1/templates``; ``service`` keeps templates offering that service type."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.list_templates(conn.api, service=service))

    @classmethod
    async def get(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """One template by ``tpl_…`` id or name."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.get_template(conn.api, template))

    @classmethod
    async def set_public(
        cls,
        template: str,
        public: bool = True,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.set_public``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.set_template_public(conn.api, template, public))

    @classmethod
    async def set_host_selector(
        cls,
        template: str,
        selector: Mapping[str, str],
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.set_host_selector``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.set_host_selector(conn.api, template, selector))

    @classmethod
    async def set_warm_pool(
        cls,
        template: str,
        size: int | None = None,
        *,
        eager: bool | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.set_warm_pool``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.set_warm_pool(conn.api, template, size, eager))

    @classmethod
    async def set_code_interpreter(
        cls,
        template: str,
        mode: CodeInterpreterMode,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.set_code_interpreter``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.set_code_interpreter(conn.api, template, mode))

    @classmethod
    async def delete(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Delete a template (id or name); ``ConflictError`` while sandboxes use it, or for built-ins."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            await conn.run(ops.delete_template(conn.api, template))

    @classmethod
    async def rebuild(
        cls,
        template: str,
        *,
        registry_credentials: RegistryCredentials | None = None,
        wait: bool = False,
        on_log: AsyncLogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.rebuild``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            waiting = ops.BuildWait.asked(wait, on_log, timeout)
            return await conn.run(ops.rebuild_template(conn.api, template, registry_credentials, waiting))

    @classmethod
    async def wait(
        cls,
        template: str,
        *,
        on_log: AsyncLogCallback | None = None,
        timeout: float | None = ops.DEFAULT_BUILD_TIMEOUT,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> TemplateInfo:
        """As ``Template.wait``, awaited."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.wait_for_build(conn.api, template, timeout=timeout, on_log=on_log))

    @classmethod
    async def build_log(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> str:
        """The log of the template's current (or last) build, as text."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.build_log(conn.api, template))

    @classmethod
    async def follow_build_log(
        cls,
        template: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AsyncIterator[str]:
        """As ``Template.follow_build_log``: ``async for line in …``."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            template_id = await conn.run(ops.template_id(conn.api, template))
            cursor = await conn.run(ops.open_log(conn.api, template_id, timeout=None))
            try:
                while not cursor.finished:
                    for line in await conn.run(ops.next_lines(cursor)):
                        yield line
            finally:
                await conn.run(ops.close_log(cursor))


# The names these classes had before templates could be built; E2B users know ``Template``.
Templates = Template
AsyncTemplates = AsyncTemplate
