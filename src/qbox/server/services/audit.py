"""The audit log: append-only, hash-chained, and no entry is ever dropped.

Every writer — HTTP routes, WebSocket shells, background tasks — names its
action in an ``AuditNote`` and finishes it with ``AuditService.record``. A
note that was current while a change committed was written by that change's
own transaction (``audit_notes``); ``record`` then adds nothing, unless the
outcome is not the one that entry says. Every other note (a denial, a failure,
a change that lives on the host agent) is appended here, by one writer task
per process, many at a time under load; if such a batch fails, each entry is
retried on its own, so one entry never costs its neighbours theirs. An entry
the database keeps refusing is stored as a stand-in that says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from qbox.core.errors import ValidationError
from qbox.core.timefmt import utcnow
from qbox.server.db.tables import AuditEntry, AuditHead
from qbox.server.services import audit_chain
from qbox.server.services.audit_chain import (
    GENESIS,
    MAX_DETAIL,
    AuditRecord,
    Verification,
    entry_hash,
    sanitised,
    truncate,
    verify_chain,
)
from qbox.server.services.audit_notes import AuditNote, acting
from qbox.server.services.context import ServiceContext

__all__ = ["GENESIS", "MAX_DETAIL", "AuditNote", "AuditQuery", "AuditRecord", "AuditService", "Verification",
           "decode_cursor", "encode_cursor", "entry_hash", "truncate", "verify_chain"]

log = logging.getLogger("qbox.audit")

# Callers wait for room rather than lose an entry; this only bounds memory.
_QUEUE_SIZE = 10000
_BATCH = 200
# Pauses between a lone entry's attempts; after the last one it is stored as a stand-in.
_RETRY_PAUSES = (0.05, 0.2, 1.0)
_DATABASE_DOWN_PAUSE = 2.0

_Pending = tuple[AuditRecord, "asyncio.Future[int]"]


@dataclass
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    actor_id: str | None = None
    action: str | None = None
    target_id: str | None = None
    limit: int = 100
    cursor: str | None = None


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "a":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError.for_fields({"cursor": "not a cursor this server gave out"}) from None


def stand_in(record: AuditRecord, error: BaseException) -> AuditRecord:
    """What is stored for an entry the database refused: who did what, and that its detail is gone."""
    clean = sanitised(record)
    return replace(
        clean, action=clean.action or "audit.unrecorded",
        ts=clean.ts if isinstance(clean.ts, datetime) and clean.ts.tzinfo else utcnow(),
        outcome=clean.outcome if isinstance(clean.outcome, int) else 0,
        detail=f"the entry could not be stored as recorded ({type(error).__name__}); detail withheld")


@dataclass
class AuditService:
    ctx: ServiceContext
    queue: asyncio.Queue[_Pending] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    _writer: asyncio.Task[None] | None = None

    async def record(self, note: AuditNote, outcome: int, *, wait: float | None = None) -> int | None:
        """The note's entry, saying ``outcome``; from here on nothing else writes the note.

        If a change's transaction wrote the entry already, nothing more is
        stored unless ``outcome`` differs from what it says (the change
        committed, then the request failed): a second entry says so. Returns
        the id of the entry that says ``outcome`` once stored; with ``wait``,
        None if that takes longer (it stays queued and is stored when the
        database lets it).
        """
        note.closed = True
        if note.written_id is not None:
            if outcome == note.success_status or (note.from_page and 200 <= outcome < 400):
                return note.written_id
            note.detail = f"after entry {note.written_id}: {note.detail}"
        return await self._append_later(note.to_record(outcome), wait)

    async def _append_later(self, record: AuditRecord, wait: float | None) -> int | None:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self.queue.put((sanitised(record), done))
        # Shielded: a caller that stops waiting does not take its entry with it.
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(done), wait)
        return None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="audit writer")

    async def stop(self) -> None:
        await self.flush(timeout=10)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        while not self.queue.empty():
            # The database stayed away until shutdown: the log file is the last place left.
            record, _done = self.queue.get_nowait()
            log.error("audit entry not stored at shutdown: %r", record)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything recorded so far is in the database (bounded)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < _BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._store(batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _store(self, batch: list[_Pending]) -> None:
        try:
            ids = await self._append([record for record, _ in batch])
        except Exception:  # noqa: BLE001 - fall back to one entry at a time
            log.warning("audit batch of %d failed; storing its entries one by one", len(batch), exc_info=True)
            ids = [await self._store_one(record) for record, _ in batch]
        for (_, done), entry_id in zip(batch, ids, strict=True):
            if not done.done():
                done.set_result(entry_id)

    async def _store_one(self, record: AuditRecord) -> int:
        for attempt in itertools.count():
            try:
                [entry_id] = await self._append([record])
                return entry_id
            except Exception as exc:  # noqa: BLE001
                error = exc
            if attempt >= len(_RETRY_PAUSES):
                # Refused again and again: store what can be said about it, unless the database is away.
                try:
                    [entry_id] = await self._append([stand_in(record, error)])
                except Exception:  # noqa: BLE001
                    log.exception("audit database unavailable; the entry is kept until it is back")
                else:
                    log.error("audit entry refused, stored as a stand-in: %r", record, exc_info=error)
                    return entry_id
            await asyncio.sleep(_RETRY_PAUSES[attempt] if attempt < len(_RETRY_PAUSES) else _DATABASE_DOWN_PAUSE)
        raise AssertionError("unreachable")

    async def _append(self, records: list[AuditRecord]) -> list[int]:
        async with self.ctx.sessions() as session, session.begin():
            connection = await session.connection()
            return await connection.run_sync(audit_chain.append, records)

    async def query(self, q: AuditQuery) -> tuple[list[AuditEntry], str | None]:
        await self.flush()
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(q.limit + 1)
        if q.since:
            stmt = stmt.where(AuditEntry.ts >= q.since)
        if q.until:
            stmt = stmt.where(AuditEntry.ts <= q.until)
        if q.actor_id:
            stmt = stmt.where(AuditEntry.actor_id == q.actor_id)
        if q.action:
            stmt = stmt.where(AuditEntry.action == q.action)
        if q.target_id:
            stmt = stmt.where(AuditEntry.target_id == q.target_id)
        if q.cursor:
            stmt = stmt.where(AuditEntry.id < decode_cursor(q.cursor))
        async with self.ctx.sessions() as session:
            rows = list((await session.execute(stmt)).scalars().all())
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        return rows, encode_cursor(rows[-1].id) if more and rows else None

    async def verify(self) -> Verification:
        await self.flush()
        async with self.ctx.sessions() as session:
            head = await session.get(AuditHead, 1)
            # Entries committed after the head was read are not this check's business.
            last = head.last_id if head is not None else None
            stmt = select(AuditEntry).order_by(AuditEntry.id)
            if last is not None:
                stmt = stmt.where(AuditEntry.id <= last)
            rows = list((await session.execute(stmt)).scalars().all())
        if head is None:
            return Verification(not rows, len(rows), rows[0].id if rows else None,
                                "entries without a chain head" if rows else None)
        first_id = 1
        if rows and rows[0].id > 1:
            # Only retention removes the oldest entries, and it says so in the chain.
            marker = f"retention removed entries up to {rows[0].id - 1}"
            if not any(r.action == "audit.prune" and r.detail == marker for r in rows):
                return Verification(False, 0, 1, f"entries before {rows[0].id} were removed")
            first_id = rows[0].id
        return verify_chain(rows, head.last_id, head.last_hash, first_id)

    async def prune(self, older_than: timedelta) -> int:
        """Retention: drop the oldest entries; the marker anchoring the rest commits with the deletion."""
        now = self.ctx.clock()
        cutoff = now - older_than
        await self.flush()
        marker = AuditNote("audit.prune", at=now)
        with acting(marker):
            async with self.ctx.sessions() as session, session.begin():
                last_old = await session.scalar(select(AuditEntry.id).where(AuditEntry.ts < cutoff)
                                                .order_by(AuditEntry.id.desc()).limit(1))
                if last_old is None:
                    return 0
                marker.detail = f"retention removed entries up to {last_old}"
                result = await session.execute(delete(AuditEntry).where(AuditEntry.id <= last_old))
                removed = int(getattr(result, "rowcount", 0) or 0)
        await self.record(marker, marker.success_status)
        return removed
