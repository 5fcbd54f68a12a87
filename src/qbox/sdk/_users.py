"""Users (admin): add, list, inspect, disable, set a password; quotas (a member reads their own)."""

from __future__ import annotations

from collections.abc import Iterable

from qbox.sdk import _access_ops as ops
from qbox.sdk import _quota_ops as quota_ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._access_models import UserInfo
from qbox.sdk._quota_models import QuotaDefaults, QuotaInfo
from qbox.sdk._transport import AsyncConnection, Connection


def _limits(sandboxes: int | None, vcpus: int | None, memory_mb: int | None, disk_mb: int | None,
            commands: int | None, shells: int | None) -> dict[str, int | None]:
    return {"sandboxes": sandboxes, "vcpus": vcpus, "memory_mb": memory_mb, "disk_mb": disk_mb,
            "commands": commands, "shells": shells}


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


    @classmethod
    def quota(
        cls,
        user_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaInfo:
        """A user's quota limits, overrides and usage; without ``user_id``, the caller's own."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            if user_id is None:
                return conn.run(quota_ops.my_quota(conn.api))
            return conn.run(quota_ops.get_quota(conn.api, user_id))

    @classmethod
    def set_quota(
        cls,
        user_id: str,
        *,
        sandboxes: int | None = None,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        commands: int | None = None,
        shells: int | None = None,
        reset: Iterable[str] = (),
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaInfo:
        """Override a user's quotas (admin): the ones given change, those named in ``reset`` go back to the
        default, the rest stay."""
        changes = quota_ops.quota_changes(_limits(sandboxes, vcpus, memory_mb, disk_mb, commands, shells), reset)
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(quota_ops.set_quota(conn.api, user_id, changes))

    @classmethod
    def quota_defaults(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaDefaults:
        """The quota defaults every member gets unless overridden (admin)."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(quota_ops.get_defaults(conn.api))

    @classmethod
    def set_quota_defaults(
        cls,
        *,
        sandboxes: int | None = None,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        commands: int | None = None,
        shells: int | None = None,
        reset: Iterable[str] = (),
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaDefaults:
        """Change the defaults (admin); those named in ``reset`` go back to their ``QBOX_QUOTA_*`` setting."""
        changes = quota_ops.quota_changes(_limits(sandboxes, vcpus, memory_mb, disk_mb, commands, shells), reset)
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(quota_ops.set_defaults(conn.api, changes))

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

    @classmethod
    async def quota(
        cls,
        user_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaInfo:
        """A user's quota limits, overrides and usage; without ``user_id``, the caller's own."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            if user_id is None:
                return await conn.run(quota_ops.my_quota(conn.api))
            return await conn.run(quota_ops.get_quota(conn.api, user_id))

    @classmethod
    async def set_quota(
        cls,
        user_id: str,
        *,
        sandboxes: int | None = None,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        commands: int | None = None,
        shells: int | None = None,
        reset: Iterable[str] = (),
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaInfo:
        """Override a user's quotas (admin): the ones given change, those named in ``reset`` go back to the
        default, the rest stay."""
        changes = quota_ops.quota_changes(_limits(sandboxes, vcpus, memory_mb, disk_mb, commands, shells), reset)
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(quota_ops.set_quota(conn.api, user_id, changes))

    @classmethod
    async def quota_defaults(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaDefaults:
        """The quota defaults every member gets unless overridden (admin)."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(quota_ops.get_defaults(conn.api))

    @classmethod
    async def set_quota_defaults(
        cls,
        *,
        sandboxes: int | None = None,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        commands: int | None = None,
        shells: int | None = None,
        reset: Iterable[str] = (),
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> QuotaDefaults:
        """Change the defaults (admin); those named in ``reset`` go back to their ``QBOX_QUOTA_*`` setting."""
        changes = quota_ops.quota_changes(_limits(sandboxes, vcpus, memory_mb, disk_mb, commands, shells), reset)
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(quota_ops.set_defaults(conn.api, changes))
