"""Users (admin): add, list, inspect, disable, set a password."""

from __future__ import annotations

from qbox.sdk import _access_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._access_models import UserInfo
from qbox.sdk._transport import AsyncConnection, Connection


class Users:
    @classmethod
    def create(
        cls,
        email: str,
        role: str = "member",
        password: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        """``POST /v1/users``: ``role`` is ``member`` or ``admin``; without a password the user cannot log in yet."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.create_user(conn.api, email=email, role=role, password=password))

    @classmethod
    def list(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[UserInfo]:
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.list_users(conn.api))

    @classmethod
    def get(
        cls,
        user_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.get_user(conn.api, user_id))

    @classmethod
    def disable(
        cls,
        user_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        """Disable a user; the server also revokes their API keys and sessions."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.disable_user(conn.api, user_id))

    @classmethod
    def set_password(
        cls,
        user_id: str,
        password: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """``PUT /v1/users/{id}/password``."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            conn.run(ops.set_password(conn.api, user_id, password))


class AsyncUsers:
    @classmethod
    async def create(
        cls,
        email: str,
        role: str = "member",
        password: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        """``POST /v1/users``: ``role`` is ``member`` or ``admin``; without a password the user cannot log in yet."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.create_user(conn.api, email=email, role=role, password=password))

    @classmethod
    async def list(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> list[UserInfo]:
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.list_users(conn.api))

    @classmethod
    async def get(
        cls,
        user_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.get_user(conn.api, user_id))

    @classmethod
    async def disable(
        cls,
        user_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> UserInfo:
        """Disable a user; the server also revokes their API keys and sessions."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.disable_user(conn.api, user_id))

    @classmethod
    async def set_password(
        cls,
        user_id: str,
        password: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> None:
        """``PUT /v1/users/{id}/password``."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            await conn.run(ops.set_password(conn.api, user_id, password))
