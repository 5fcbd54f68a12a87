"""Hosts (admin): list and inspect them, drain and uncordon, remove; the tokens new hosts join with."""

from __future__ import annotations

from collections.abc import Mapping

from qbox.sdk import _host_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._host_models import CreatedHostToken, Host, HostToken
from qbox.sdk._transport import AsyncConnection, Connection


class Hosts:
    @classmethod
    def list(
        cls,
        status: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[Host]:
        """``GET /v1/hosts``: every host (only those in ``status`` when given: ready, draining, unhealthy, down)."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_hosts(conn.api, status=status))

    @classmethod
    def get(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.get_host(conn.api, host_id))

    @classmethod
    def drain(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        """No new sandboxes go to the host; those running there run to their end."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.drain_host(conn.api, host_id))

    @classmethod
    def uncordon(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        """Undo ``drain``: the host takes new sandboxes again."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.uncordon_host(conn.api, host_id))

    @classmethod
    def remove(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Revoke the host's credential; its live sandboxes end ("host removed"). Its agent must join again."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            conn.run(ops.remove_host(conn.api, host_id))


class AsyncHosts:
    @classmethod
    async def list(
        cls,
        status: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[Host]:
        """``GET /v1/hosts``: every host (only those in ``status`` when given: ready, draining, unhealthy, down)."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.list_hosts(conn.api, status=status))

    @classmethod
    async def get(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.get_host(conn.api, host_id))

    @classmethod
    async def drain(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        """No new sandboxes go to the host; those running there run to their end."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.drain_host(conn.api, host_id))

    @classmethod
    async def uncordon(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Host:
        """Undo ``drain``: the host takes new sandboxes again."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.uncordon_host(conn.api, host_id))

    @classmethod
    async def remove(
        cls,
        host_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Revoke the host's credential; its live sandboxes end ("host removed"). Its agent must join again."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            await conn.run(ops.remove_host(conn.api, host_id))


class HostTokens:
    @classmethod
    def create(
        cls,
        ttl_seconds: int | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedHostToken:
        """``POST /v1/host-tokens``: a one-time token an agent joins with (``qbox agent --join URL --token T``).

        Keep ``.token`` (and ``.join_command``): it is never shown again. ``ttl_seconds`` is 60 to 604800
        (the server's default: an hour); the joining host gets ``labels``.
        """
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.create_host_token(conn.api, ttl_seconds=ttl_seconds, labels=labels))

    @classmethod
    def list(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[HostToken]:
        """Every join token, never its secret: ``status`` says whether it can still be used."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_host_tokens(conn.api))

    @classmethod
    def revoke(
        cls,
        token_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Revoke a join token that has not been used yet; hosts that joined with it stay."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            conn.run(ops.revoke_host_token(conn.api, token_id))


class AsyncHostTokens:
    @classmethod
    async def create(
        cls,
        ttl_seconds: int | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedHostToken:
        """``POST /v1/host-tokens``: a one-time token an agent joins with (``qbox agent --join URL --token T``).

        Keep ``.token`` (and ``.join_command``): it is never shown again. ``ttl_seconds`` is 60 to 604800
        (the server's default: an hour); the joining host gets ``labels``.
        """
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.create_host_token(conn.api, ttl_seconds=ttl_seconds, labels=labels))

    @classmethod
    async def list(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[HostToken]:
        """Every join token, never its secret: ``status`` says whether it can still be used."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.list_host_tokens(conn.api))

    @classmethod
    async def revoke(
        cls,
        token_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """Revoke a join token that has not been used yet; hosts that joined with it stay."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            await conn.run(ops.revoke_host_token(conn.api, token_id))
