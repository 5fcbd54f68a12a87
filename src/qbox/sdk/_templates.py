"""Templates: what sandboxes are created from (read access)."""

from __future__ import annotations

from qbox.sdk import _sandbox_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._models import TemplateInfo
from qbox.sdk._transport import AsyncConnection, Connection


class Templates:
    @classmethod
    def list(
        cls,
        *,
        service: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[TemplateInfo]:
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


class AsyncTemplates:
    @classmethod
    async def list(
        cls,
        *,
        service: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[TemplateInfo]:
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
