"""The audit log (admin): query it page by page or lazily, and check its hash chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from qbox.sdk import _access_ops as ops
from qbox.sdk._config import ConnectionConfig
from qbox.sdk._access_models import AuditEntry, AuditPage, AuditVerification
from qbox.sdk._transport import AsyncConnection, Connection

DEFAULT_LIMIT = 100


class Audit:
    @classmethod
    def list(
        cls,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor_id: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AuditPage:
        """``GET /v1/audit``: one page, newest first; pass ``page.next_cursor`` as ``cursor`` for older entries."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(
                ops.list_audit(
                    conn.api, since=since, until=until, actor_id=actor_id, action=action,
                    target_id=target_id, limit=limit, cursor=cursor,
                )
            )  # fmt: skip

    @classmethod
    def iter(
        cls,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor_id: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        page_size: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> Iterator[AuditEntry]:
        """Every matching entry, newest first, fetching the next page only when the previous one is used up."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            while True:
                page = conn.run(
                    ops.list_audit(
                        conn.api, since=since, until=until, actor_id=actor_id, action=action,
                        target_id=target_id, limit=page_size, cursor=cursor,
                    )
                )  # fmt: skip
                yield from page.entries
                cursor = ops.next_cursor(page, cursor)
                if cursor is None:
                    return

    @classmethod
    def verify(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AuditVerification:
        """``GET /v1/audit/verify``: recompute the hash chain; ``first_bad_id`` is where it breaks."""
        with Connection.open(config, api_key, base_url, request_timeout) as conn:
            return conn.run(ops.verify_audit(conn.api))


class AsyncAudit:
    @classmethod
    async def list(
        cls,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor_id: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AuditPage:
        """``GET /v1/audit``: one page, newest first; pass ``page.next_cursor`` as ``cursor`` for older entries."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(
                ops.list_audit(
                    conn.api, since=since, until=until, actor_id=actor_id, action=action,
                    target_id=target_id, limit=limit, cursor=cursor,
                )
            )  # fmt: skip

    @classmethod
    async def iter(
        cls,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor_id: str | None = None,
        action: str | None = None,
        target_id: str | None = None,
        page_size: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AsyncIterator[AuditEntry]:
        """Every matching entry, newest first, fetching the next page only when the previous one is used up."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            while True:
                page = await conn.run(
                    ops.list_audit(
                        conn.api, since=since, until=until, actor_id=actor_id, action=action,
                        target_id=target_id, limit=page_size, cursor=cursor,
                    )
                )  # fmt: skip
                for entry in page.entries:
                    yield entry
                cursor = ops.next_cursor(page, cursor)
                if cursor is None:
                    return

    @classmethod
    async def verify(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout: float | None = None,
        config: ConnectionConfig | None = None,
    ) -> AuditVerification:
        """``GET /v1/audit/verify``: recompute the hash chain; ``first_bad_id`` is where it breaks."""
        async with AsyncConnection.open(config, api_key, base_url, request_timeout) as conn:
            return await conn.run(ops.verify_audit(conn.api))
