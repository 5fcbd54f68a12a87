"""The control plane itself: its version (no key needed) and who the API key belongs to."""

from __future__ import annotations

from qbox.sdk import _sandbox_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._models import ClusterCa, Identity, SystemInfo
from qbox.sdk._transport import AsyncConnection, Connection


class System:
    @classmethod
    def info(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> SystemInfo:
        """``GET /v1/system``: the server's version. Works without an API key."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.system_info(conn.api))

    @classmethod
    def me(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Identity:
        """``GET /v1/auth/me``: the key's id, owner and scopes."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.whoami(conn.api))

    @classmethod
    def cluster_ca(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ClusterCa:
        """``GET /v1/cluster/ca``: the cluster CA's certificate and fingerprint (``hosts:read``)."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.cluster_ca(conn.api))


class AsyncSystem:
    @classmethod
    async def info(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> SystemInfo:
        """``GET /v1/system``: the server's version. Works without an API key."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.system_info(conn.api))

    @classmethod
    async def me(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Identity:
        """``GET /v1/auth/me``: the key's id, owner and scopes."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.whoami(conn.api))

    @classmethod
    async def cluster_ca(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ClusterCa:
        """``GET /v1/cluster/ca``: the cluster CA's certificate and fingerprint (``hosts:read``)."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.cluster_ca(conn.api))
