"""API keys: create (the secret is shown once), list, inspect, revoke and rotate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from qbox.sdk import _access_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._access_models import ApiKeyInfo, CreatedApiKey
from qbox.sdk._transport import AsyncConnection, Connection


class ApiKeys:
    @classmethod
    def create(
        cls,
        name: str,
        scopes: Sequence[str],
        expires_at: datetime | None = None,
        *,
        user_id: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedApiKey:
        """``POST /v1/api-keys``. Keep ``.secret``: it is never shown again.

        The key is the caller's unless an admin names another ``user_id``. A naive ``expires_at`` means UTC.
        """
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            op = ops.create_api_key(conn.api, name=name, scopes=scopes, expires_at=expires_at, user_id=user_id)
            return conn.run(op)

    @classmethod
    def list(
        cls,
        user_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[ApiKeyInfo]:
        """The caller's keys (an admin sees everyone's; ``user_id`` keeps one user's)."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_api_keys(conn.api, user_id=user_id))

    @classmethod
    def get(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ApiKeyInfo:
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.get_api_key(conn.api, key_id))

    @classmethod
    def revoke(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ApiKeyInfo:
        """Revoke a key at once; revoking a revoked key is fine."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.revoke_api_key(conn.api, key_id))

    @classmethod
    def rotate(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedApiKey:
        """Create a key with the same name, scopes, owner and lifetime, then revoke the old one."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.rotate_api_key(conn.api, key_id))


class AsyncApiKeys:
    @classmethod
    async def create(
        cls,
        name: str,
        scopes: Sequence[str],
        expires_at: datetime | None = None,
        *,
        user_id: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedApiKey:
        """``POST /v1/api-keys``. Keep ``.secret``: it is never shown again.

        The key is the caller's unless an admin names another ``user_id``. A naive ``expires_at`` means UTC.
        """
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            op = ops.create_api_key(conn.api, name=name, scopes=scopes, expires_at=expires_at, user_id=user_id)
            return await conn.run(op)

    @classmethod
    async def list(
        cls,
        user_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[ApiKeyInfo]:
        """The caller's keys (an admin sees everyone's; ``user_id`` keeps one user's)."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.list_api_keys(conn.api, user_id=user_id))

    @classmethod
    async def get(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ApiKeyInfo:
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.get_api_key(conn.api, key_id))

    @classmethod
    async def revoke(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> ApiKeyInfo:
        """Revoke a key at once; revoking a revoked key is fine."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.revoke_api_key(conn.api, key_id))

    @classmethod
    async def rotate(
        cls,
        key_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> CreatedApiKey:
        """Create a key with the same name, scopes, owner and lifetime, then revoke the old one."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.rotate_api_key(conn.api, key_id))
