"""The audit log: append-only, hash-chained, written off the request path.

Requests hand entries to ``AuditLog.record``, which never blocks beyond a
short bound; one writer task per process appends them in batches. Each row's
hash covers its content and the previous row's hash; the single
``audit_head`` row is updated in the same transaction, which serialises
writers across replicas and lets ``verify`` notice rows removed from the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from qbox.core.errors import ValidationError
from qbox.core.timefmt import to_wire
from qbox.server.db.tables import AuditEntry, AuditHead
from qbox.server.services.context import ServiceContext

log = logging.getLogger("qbox.audit")

GENESIS = "0" * 64
MAX_DETAIL = 1000
_QUEUE_SIZE = 10000
_ENQUEUE_WAIT_SECONDS = 0.25
_BATCH = 200
_LINGER_SECONDS = 0.05


@dataclass
class AuditRecord:
    action: str
    outcome: int
    ts: datetime
    actor_id: str | None = None
    actor_email: str | None = None
    api_key_id: str | None = None
    source_ip: str | None = None
    target_id: str | None = None
    detail: str = ""


def truncate(text: str, limit: int = MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry_hash(prev_hash: str, entry_id: int, record: AuditRecord) -> str:
    content = json.dumps(
        [entry_id, to_wire(record.ts), record.actor_id, record.actor_email, record.api_key_id,
         record.source_ip, record.action, record.target_id, record.outcome, record.detail],
        separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def _record_of(row: AuditEntry) -> AuditRecord:
    return AuditRecord(action=row.action, outcome=row.outcome, ts=row.ts, actor_id=row.actor_id,
                       actor_email=row.actor_email, api_key_id=row.api_key_id, source_ip=row.source_ip,
                       target_id=row.target_id, detail=row.detail)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None


def verify_chain(rows: list[AuditEntry], head_last_id: int, head_last_hash: str, first_id: int) -> Verification:
    """Pure check of rows in id order against the head row; ``first_id`` is where retention left the chain."""
    expected_prev: str | None = None
    expected_id = first_id
    for checked, row in enumerate(rows):
        if row.id != expected_id:
            return Verification(False, checked, expected_id, f"entry {expected_id} is missing")
        if expected_prev is not None and row.prev_hash != expected_prev:
            return Verification(False, checked, row.id, "chain broken: previous hash does not match")
        if entry_hash(row.prev_hash, row.id, _record_of(row)) != row.hash:
            return Verification(False, checked, row.id, "entry was modified: its hash does not match")
        expected_prev, expected_id = row.hash, row.id + 1
    last_id = rows[-1].id if rows else first_id - 1
    if head_last_id != last_id or (rows and head_last_hash != rows[-1].hash):
        return Verification(False, len(rows), last_id + 1, "entries after the last one were removed")
    return Verification(True, len(rows))


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


@dataclass
class AuditLog:
    ctx: ServiceContext
    queue: asyncio.Queue[AuditRecord] = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))
    dropped: int = 0
    _writer: asyncio.Task[None] | None = None

    async def record(self, record: AuditRecord) -> None:
        record.detail = truncate(record.detail)
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self.queue.put(record), _ENQUEUE_WAIT_SECONDS)
            except TimeoutError:
                self.dropped += 1
                log.error("audit queue full: dropped %s by %s on %s", record.action, record.actor_id,
                          record.target_id)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="audit writer")

    async def stop(self) -> None:
        await self.flush(timeout=5)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything recorded so far is in the database (bounded)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # Let requests in flight finish first and gather what they add: one
            # transaction for a burst instead of one per request.
            await asyncio.sleep(_LINGER_SECONDS)
            while len(batch) < _BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._append(batch)
            except Exception:  # noqa: BLE001 - keep the writer alive; retry once after a pause
                log.exception("audit write failed; retrying")
                await asyncio.sleep(0.5)
                try:
                    await self._append(batch)
                except Exception:  # noqa: BLE001
                    log.exception("audit write failed twice: %d entries lost", len(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _append(self, batch: list[AuditRecord]) -> None:
        # Core statements, not ORM objects: this runs beside every audited request.
        async with self.ctx.sessions() as session, session.begin():
            # Write first: it takes the database's write lock before anything is read.
            touched = await session.execute(update(AuditHead).where(AuditHead.id == 1)
                                            .values(last_id=AuditHead.last_id))
            if not getattr(touched, "rowcount", 0):
                await session.execute(insert(AuditHead).values(id=1, last_id=0, last_hash=GENESIS))
            head = (await session.execute(select(AuditHead.last_id, AuditHead.last_hash)
                                          .where(AuditHead.id == 1))).one()
            last_id, last_hash = int(head[0]), str(head[1])
            rows = []
            for record in batch:
                last_id += 1
                digest = entry_hash(last_hash, last_id, record)
                rows.append({"id": last_id, "ts": record.ts, "actor_id": record.actor_id,
                             "actor_email": record.actor_email, "api_key_id": record.api_key_id,
                             "source_ip": record.source_ip, "action": record.action,
                             "target_id": record.target_id, "outcome": record.outcome,
                             "detail": record.detail, "prev_hash": last_hash, "hash": digest})
                last_hash = digest
            await session.execute(insert(AuditEntry), rows)
            await session.execute(update(AuditHead).where(AuditHead.id == 1)
                                  .values(last_id=last_id, last_hash=last_hash))

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
            rows = list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all())
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
        """Retention: drop the oldest entries, leaving a marker whose hash anchors the rest."""
        cutoff = self.ctx.clock() - older_than
        await self.flush()
        async with self.ctx.sessions() as session, session.begin():
            last_old = await session.scalar(select(AuditEntry.id).where(AuditEntry.ts < cutoff)
                                            .order_by(AuditEntry.id.desc()).limit(1))
            if last_old is None:
                return 0
            result = await session.execute(delete(AuditEntry).where(AuditEntry.id <= last_old))
            removed = int(getattr(result, "rowcount", 0) or 0)
        await self.record(AuditRecord(action="audit.prune", outcome=200, ts=self.ctx.clock(),
                                      detail=f"retention removed entries up to {last_old}"))
        return removed

