"""The audit chain: what an entry holds, how it is cleaned and hashed, appended and checked.

Every writer (a change's own transaction, the writer of entries for requests
that changed nothing, retention) appends through ``append``: it updates the
single ``audit_head`` row first, which takes the database's write lock (a row
lock on PostgreSQL) and so serialises writers across replicas, then numbers
the new rows from the head's last id. Ids are therefore gap-free: a
transaction that rolls back takes its ids and its head update with it. The
first entry makes the head row with ``INSERT … ON CONFLICT DO NOTHING``: on
PostgreSQL two transactions may find it missing at once, and a plain insert
would fail the second (and the change it carries) on the primary key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Insert, insert, update
from sqlalchemy.dialects import postgresql, sqlite

from qbox.core.json_input import storable
from qbox.core.timefmt import to_wire
from qbox.server.db.tables import AuditEntry, AuditHead

GENESIS = "0" * 64
MAX_DETAIL = 1000


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


def clean_text(text: str, limit: int) -> str:
    return truncate(storable(text), limit)


def _limit(column: str) -> int:
    length = getattr(AuditEntry.__table__.c[column].type, "length", None)
    return int(length) if length else MAX_DETAIL


_TEXT_FIELDS = {name: _limit(name) for name in
                ("action", "actor_id", "actor_email", "api_key_id", "source_ip", "target_id", "detail")}


def sanitised(record: AuditRecord) -> AuditRecord:
    """The record as it can always be stored: any text cleaned and cut to its column's size."""
    clean = dataclasses.replace(record)
    for name, limit in _TEXT_FIELDS.items():
        value = getattr(record, name)
        if value is not None:
            setattr(clean, name, clean_text(str(value), limit))
    return clean


def entry_hash(prev_hash: str, entry_id: int, record: AuditRecord) -> str:
    content = json.dumps(
        [entry_id, to_wire(record.ts), record.actor_id, record.actor_email, record.api_key_id,
         record.source_ip, record.action, record.target_id, record.outcome, record.detail],
        separators=(",", ":"), ensure_ascii=False,
    )
    # A stored row may predate sanitising; hashing must never be what fails.
    return hashlib.sha256((prev_hash + content).encode("utf-8", "surrogatepass")).hexdigest()


def append(connection: Connection, records: list[AuditRecord]) -> list[int]:
    """Append sanitised records to the chain inside the caller's transaction; their ids."""
    if not records:
        return []
    # Write first: it takes the write lock (the head's row lock) before the head is read.
    take_head = (update(AuditHead).where(AuditHead.id == 1).values(last_id=AuditHead.last_id + len(records))
                 .returning(AuditHead.last_id, AuditHead.last_hash))
    row = connection.execute(take_head).one_or_none()
    if row is None:
        connection.execute(_genesis_head(connection.dialect.name))
        row = connection.execute(take_head).one()
    last_id, last_hash = int(row[0]) - len(records), str(row[1])
    rows, ids = [], []
    for raw in records:
        record = sanitised(raw)
        last_id += 1
        digest = entry_hash(last_hash, last_id, record)
        rows.append({"id": last_id, "ts": record.ts, "actor_id": record.actor_id,
                     "actor_email": record.actor_email, "api_key_id": record.api_key_id,
                     "source_ip": record.source_ip, "action": record.action,
                     "target_id": record.target_id, "outcome": record.outcome,
                     "detail": record.detail, "prev_hash": last_hash, "hash": digest})
        ids.append(last_id)
        last_hash = digest
    connection.execute(insert(AuditEntry), rows)
    connection.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=last_hash))
    return ids


def _genesis_head(dialect: str) -> Insert:
    """The head before the first entry, unless another transaction made it meanwhile."""
    values = {"id": 1, "last_id": 0, "last_hash": GENESIS}
    if dialect == "postgresql":
        return postgresql.insert(AuditHead).values(values).on_conflict_do_nothing(index_elements=["id"])
    return sqlite.insert(AuditHead).values(values).on_conflict_do_nothing(index_elements=["id"])


def record_of(row: AuditEntry) -> AuditRecord:
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
    """Pure check of rows in id order against the head row; ``first_id`` is where retention left the chain.

    Ids are gap-free, so a row removed from the middle is a missing id, one
    removed from the end leaves the head pointing past the last row, and an
    edited row no longer matches its hash.
    """
    expected_prev: str | None = None
    expected_id = first_id
    for checked, row in enumerate(rows):
        if row.id != expected_id:
            return Verification(False, checked, expected_id, f"entry {expected_id} is missing")
        if expected_prev is not None and row.prev_hash != expected_prev:
            return Verification(False, checked, row.id, "chain broken: previous hash does not match")
        if entry_hash(row.prev_hash, row.id, record_of(row)) != row.hash:
            return Verification(False, checked, row.id, "entry was modified: its hash does not match")
        expected_prev, expected_id = row.hash, row.id + 1
    last_id = rows[-1].id if rows else first_id - 1
    if head_last_id != last_id or (rows and head_last_hash != rows[-1].hash):
        return Verification(False, len(rows), last_id + 1, "entries after the last one were removed")
    return Verification(True, len(rows))
