"""The audit chain's first entries, appended by two transactions at once on a database without a head."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from qbox.core.timefmt import utcnow
from qbox.server.db.engine import migrate, sync_url
from qbox.server.db.tables import AuditEntry
from qbox.server.services import audit_chain
from qbox.server.services.audit_chain import AuditRecord


def _waiting_for_a_lock(engine_url: str) -> bool:
    engine = create_engine(engine_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return bool(connection.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")))
    finally:
        engine.dispose()


def test_two_first_entries_at_once_both_commit(tmp_path: Path, database: str | None) -> None:
    url = sync_url(database or f"sqlite:///{tmp_path / 'qbox.db'}")
    migrate(url)
    engine = create_engine(url, poolclass=NullPool)
    record = AuditRecord(action="test.first", outcome=200, ts=utcnow())
    second: list[object] = []

    def append_second() -> None:
        try:
            with engine.begin() as connection:
                second.append(audit_chain.append(connection, [record]))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            second.append(exc)

    try:
        with engine.begin() as first:
            assert first.scalar(text("SELECT count(*) FROM audit_head")) == 0
            assert audit_chain.append(first, [record]) == [1]
            other = threading.Thread(target=append_second)
            other.start()
            # The second transaction found no head either, and waits for the first's.
            deadline = time.monotonic() + 5
            while database is not None and not _waiting_for_a_lock(url) and time.monotonic() < deadline:
                time.sleep(0.05)
            if database is None:
                time.sleep(0.3)
        other.join(timeout=30)
        assert second == [[2]]
        with Session(engine) as session:
            rows = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
            head = session.execute(text("SELECT last_id, last_hash FROM audit_head")).one()
        verdict = audit_chain.verify_chain(list(rows), int(head[0]), str(head[1]), first_id=1)
        assert [row.id for row in rows] == [1, 2] and verdict.ok
    finally:
        engine.dispose()
