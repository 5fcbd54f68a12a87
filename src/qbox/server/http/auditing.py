"""Writes the audit entry a route asked for (``AuditNote``), once the response status is known."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qbox.core.timefmt import utcnow
from qbox.server.http.deps import AuditNote
from qbox.server.services.audit import AuditRecord


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            note = scope.get("state", {}).get("audit")
            if isinstance(note, AuditNote) and note.action:
                principal = note.principal
                client = scope.get("client")
                await scope["app"].state.services.audit.record(AuditRecord(
                    action=note.action,
                    outcome=status,
                    ts=utcnow(),
                    actor_id=principal.user_id if principal else None,
                    actor_email=principal.email if principal else None,
                    api_key_id=principal.api_key_id if principal else None,
                    source_ip=client[0] if client else None,
                    target_id=note.target_id,
                    detail=note.detail,
                ))
