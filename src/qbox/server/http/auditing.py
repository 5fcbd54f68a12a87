"""How a request's audit entry is declared, described and finished.

A route declares its action (``Access(audit=...)``, or ``Audited`` for the
dashboard's login and logout); the declaration puts an ``AuditNote`` on the
request, naming the target the path's id, or for a creation the row it
inserts (``audit_notes``). Once the caller is allowed, the note is current: a
change the request commits carries its entry. A refusal before that is noted
under the declared action, or as ``auth.failed`` / ``rate_limited`` on a route
that declares none. Route bodies only ``describe`` what they were asked.

``AuditMiddleware`` finishes every note with ``AuditService.record`` once the
outcome is known: the response status, a WebSocket's accept (101) or its
denial.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qbox.core.ids import is_path_id
from qbox.server.principal import Principal
from qbox.server.services.audit_notes import AuditNote, make_current

# Path parameters that name the request's target, in order of preference.
_TARGET_PARAMS = ("sandbox_id", "key_id", "user_id", "template_id", "host_id", "token_id")
# The response is sent already; past this the entry is stored by the writer alone.
_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Audited:
    """A route's audit declaration: the action its entry names, and whether its target is the caller."""

    action: str
    target_is_caller: bool = False

    def attach(self, conn: HTTPConnection, principal: Principal | None = None) -> AuditNote:
        """The request's note; its target is the caller if so declared, else the path's id."""
        target = principal.user_id if self.target_is_caller and principal else _path_target(conn)
        note = AuditNote(self.action, target_id=target, principal=principal)
        _attach(conn, note)
        return note

    async def declare(self, conn: HTTPConnection) -> None:
        """Dependency of a route that takes no key (the dashboard's login and logout): its note, current at once.

        The caller is whom an earlier dependency found (``conn.state.principal``), if any.
        """
        self.attach(conn, getattr(conn.state, "principal", None))
        allowed_to_change(conn)


def _path_target(conn: HTTPConnection) -> str | None:
    return next((str(conn.path_params[p]) for p in _TARGET_PARAMS
                 if p in conn.path_params and is_path_id(p, str(conn.path_params[p]))), None)


def _attach(conn: HTTPConnection, note: AuditNote) -> None:
    conn.state.audit = note
    note.source_ip = conn.client.host if conn.client else None
    # What the entry says when it is written with the change: the status the route declares for success.
    note.success_status = getattr(conn.scope.get("route"), "status_code", None) or 200


def note_of(conn: HTTPConnection) -> AuditNote | None:
    note = getattr(conn.state, "audit", None)
    return note if isinstance(note, AuditNote) else None


def allowed_to_change(conn: HTTPConnection) -> None:
    """The caller is allowed: from here a change the request commits carries its declared entry.

    Not before: authenticating may commit (a key's last use), which is no change of the caller's.
    A shell changes nothing in the database; its entry is written when it opens.
    """
    note = note_of(conn)
    if note is not None and conn.scope["type"] == "http":
        make_current(note)


def refused(conn: HTTPConnection, undeclared: str, principal: Principal | None = None) -> None:
    """Note a refusal before the route ran: under its declared action, else as ``undeclared``."""
    note = note_of(conn)
    if note is None:
        note = AuditNote(undeclared, target_id=_path_target(conn))
        _attach(conn, note)
    note.principal = principal
    note.detail = note.detail or f"{conn.scope.get('method', 'GET')} {conn.url.path}"


def describe(conn: HTTPConnection, detail: str) -> None:
    """What the request asked for, as its entry says it (never secrets or contents)."""
    if note := note_of(conn):
        note.detail = detail


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
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
            await _finish(scope, status)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A shell's entry is written when it is opened (101) or refused (the denial's status)."""

        async def capture(message: Message) -> None:
            await send(message)
            if message["type"] == "websocket.accept":
                await _finish(scope, 101)
            elif message["type"] == "websocket.http.response.start":
                await _finish(scope, int(message["status"]))

        await self.app(scope, receive, capture)


async def _finish(scope: Scope, outcome: int) -> None:
    note = scope.get("state", {}).get("audit")
    if not isinstance(note, AuditNote) or not note.action or note.closed:
        return
    if note.source_ip is None and (client := scope.get("client")):
        note.source_ip = client[0]
    wait = _WAIT_SECONDS if scope["type"] == "http" else None
    await scope["app"].state.services.audit.record(note, outcome, wait=wait)
