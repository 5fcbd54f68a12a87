"""The migrations build exactly the schema tables.py declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from qbox.server.db.engine import migrate, sync_url
from qbox.server.db.tables import Base


def test_migrate_leaves_no_difference_from_the_tables(tmp_path: Path, database: str | None) -> None:
    url = database or f"sqlite:///{tmp_path / 'qbox.db'}"
    migrate(url)
    migrate(url)  # again: nothing to do
    engine = create_engine(sync_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
