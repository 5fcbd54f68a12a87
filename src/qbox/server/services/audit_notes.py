"""A state change and its audit entry commit together.

The request (or a background actor such as the reaper) names its action in an
``AuditNote`` and makes it current (``acting``). The first database
transaction that then commits a change appends the note's entry to the chain
inside that same transaction, through a session event on every session the
``ServiceContext`` hands out; if the entry cannot be written, the change is
not committed either. Routes and services need not know: they commit as
always. Every note is then finished by ``AuditService.record``, which writes
the entry of a note whose action changed nothing (a denial, a failure, a
change that lives only on the host agent).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from qbox.core.timefmt import utcnow
from qbox.server.db.tables import ApiKey, BuildContext, Sandbox, Template, User, WebSession
from qbox.server.principal import Principal
from qbox.server.services import audit_chain
from qbox.server.services.audit_chain import AuditRecord

_CHANGED = "audit_changed"
_CREATED = "audit_created"
_CARRIES = "audit_carries"


@dataclass
class AuditNote:
    """One request's (or background action's) audit entry, until it is written."""

    action: str
    target_id: str | None = None
    detail: str = ""
    principal: Principal | None = None
    source_ip: str | None = None
    # What the entry says when it is written with the change: the route's success status.
    success_status: int = 200
    # A dashboard page's change: it answers success as a page does (200, a 204 for htmx, a 303
    # redirect for a plain form), any of which is the success its entry already says.
    from_page: bool = False
    # The entry's id once a change's transaction committed it.
    written_id: int | None = None
    # Set when the request is over: later commits (background tasks it started) write nothing.
    closed: bool = False
    # When it happened, if not when the entry is written.
    at: datetime | None = None
    _pending_id: int | None = field(default=None, repr=False)

    def to_record(self, outcome: int) -> AuditRecord:
        principal = self.principal
        return AuditRecord(
            action=self.action, outcome=outcome, ts=self.at or utcnow(),
            actor_id=principal.user_id if principal else None,
            actor_email=principal.email if principal else None,
            api_key_id=principal.api_key_id if principal else None,
            source_ip=self.source_ip, target_id=self.target_id, detail=self.detail,
        )


_current: contextvars.ContextVar[AuditNote | None] = contextvars.ContextVar("qbox_audit_note", default=None)


def make_current(note: AuditNote | None) -> None:
    """The note the next committed change carries (for the rest of this request's task)."""
    _current.set(note)


@contextlib.contextmanager
def acting(note: AuditNote) -> Iterator[AuditNote]:
    """Background actors: changes inside the block carry ``note``; nothing after it does."""
    token = _current.set(note)
    try:
        yield note
    finally:
        note.closed = True
        _current.reset(token)


# An action whose target is a row it inserts: that row's kind, its target id, and (unless the
# route described it) the entry's detail. The id is not known before the commit.
_CREATES: dict[str, tuple[type[Any], Callable[[Any], str], Callable[[Any], str]]] = {
    "api_key.create": (ApiKey, lambda k: k.id,
                       lambda k: f"name={k.name!r} user={k.user_id} scopes={','.join(k.scopes)}"),
    "auth.login": (WebSession, lambda s: s.user_id, lambda s: ""),
    "build_context.create": (BuildContext, lambda c: c.id,
                             lambda c: f"sizeBytes={c.size_bytes} sha256={c.sha256}"),
    "sandbox.create": (Sandbox, lambda s: s.id, lambda s: f"template={s.template_id} status={s.status}"),
    "template.create": (Template, lambda t: t.id,
                        lambda t: f"name={t.name} imageRef={t.image_ref} steps={len(t.steps or [])}"),
    "user.create": (User, lambda u: u.id, lambda u: f"email={u.email} role={u.role}"),
}


def _fill_in_created(note: AuditNote, created: list[Any]) -> None:
    if note.action not in _CREATES:
        return
    kind, target_of, describe = _CREATES[note.action]
    row = next((obj for obj in created if isinstance(obj, kind)), None)
    if row is None:
        return
    if note.target_id is None:
        note.target_id = str(target_of(row))
    if not note.detail:
        note.detail = describe(row)


def _changed(session: Session) -> bool:
    return bool(session.info.get(_CHANGED) or session.new or session.deleted
                or any(session.is_modified(obj) for obj in session.dirty))


def _on_execute(state: ORMExecuteState) -> Any:
    if not (state.is_insert or state.is_update or state.is_delete):
        return None
    result = state.invoke_statement()
    # A conditional UPDATE that matched nothing (a kill that lost a race) changed nothing.
    if getattr(result, "rowcount", -1) != 0:
        state.session.info[_CHANGED] = True
    return result


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    session.info[_CHANGED] = True
    session.info.setdefault(_CREATED, []).extend(session.new)


def _before_commit(session: Session) -> None:
    note = _current.get()
    if note is None or note.closed or note.written_id is not None or note._pending_id is not None:
        return
    if not _changed(session):
        return
    # Flush now, so that after the head is taken nothing else waits for a lock.
    session.flush()
    _fill_in_created(note, session.info.get(_CREATED, []))
    [entry_id] = audit_chain.append(session.connection(), [note.to_record(note.success_status)])
    note._pending_id = entry_id
    session.info[_CARRIES] = note


def _after_commit(session: Session) -> None:
    note: AuditNote | None = session.info.pop(_CARRIES, None)
    if note is not None:
        note.written_id, note._pending_id = note._pending_id, None
    _reset(session)


def _after_rollback(session: Session) -> None:
    note: AuditNote | None = session.info.pop(_CARRIES, None)
    if note is not None:
        # The change is gone with its entry: the next commit (or the middleware) writes it.
        note._pending_id = None
    _reset(session)


def _reset(session: Session) -> None:
    session.info.pop(_CHANGED, None)
    session.info.pop(_CREATED, None)


_HOOKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("do_orm_execute", _on_execute),
    ("after_flush", _after_flush),
    ("before_commit", _before_commit),
    ("after_commit", _after_commit),
    ("after_rollback", _after_rollback),
)


def install(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Make every session of ``sessions`` write the current note with the change it commits."""
    target: type[Session] = sessions.kw.get("sync_session_class", Session)
    for name, hook in _HOOKS:
        if not event.contains(target, name, hook):
            event.listen(target, name, hook)
