"""Writes the audit entry of a request whose change did not carry it, once the response status is known.

A request that committed a change wrote its entry in that change's
transaction (``audit_notes``). What is left for here: denials, failures,
authentication failures and changes that live only on the host agent, each
written through ``AuditLog.record``, which never drops an entry.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qbox.server.services.audit_notes import AuditNote, make_current

# The response is sent already; past this the entry is stored by the writer alone.
_WAIT_SECONDS = 2.0


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

        make_current(None)
        try:
            await self.app(scope, receive, capture)
        finally:
            note = scope.get("state", {}).get("audit")
            if isinstance(note, AuditNote) and note.action:
                await _finish(scope, note, status)


async def _finish(scope: Scope, note: AuditNote, status: int) -> None:
    # From here on, nothing the request started (a boot, a build) writes this note.
    note.closed = True
    if note.source_ip is None and (client := scope.get("client")):
        note.source_ip = client[0]
    audit = scope["app"].state.services.audit
    if note.written_id is None:
        await audit.record(note.to_record(status), wait=_WAIT_SECONDS)
    elif status != note.success_status:
        # The change was committed (and audited) but the request then failed: say so too.
        note.detail = f"after entry {note.written_id}: {note.detail}"
        await audit.record(note.to_record(status), wait=_WAIT_SECONDS)
