"""Engines, sessions and migrations.

The app uses an async engine; Alembic runs on a sync engine at start. SQLite
runs in WAL mode with a busy timeout so the reaper and requests don't trip
over each other. PostgreSQL URLs (``postgresql://…``) take asyncpg for the app
and psycopg for the migrations, whatever driver the URL names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from qbox.core.json_input import loads_stored

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed number: the PostgreSQL advisory lock the migrating replica holds.
_MIGRATION_LOCK_KEY = 0x71626F78

# How long a SQLite connection waits for another's write lock.
_SQLITE_BUSY_SECONDS = 30

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def async_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    return f"{_ASYNC_DRIVERS.get(base, scheme)}{sep}{rest}"


def sync_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    return f"{_SYNC_DRIVERS.get(base, base)}{sep}{rest}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # First: switching a new database to WAL waits for a writer that holds it (a replica
    # migrating it) instead of failing at once with "database is locked".
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_SECONDS * 1000}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """``journal_mode=WAL``, waiting as long as the busy timeout would. SQLite answers
    "database is locked" at once, without calling the busy handler, when another
    connection is switching the same new database (two replicas starting together)."""
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # sqlite3's error, or the async driver's adaptation of it
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _prepare(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def make_async_engine(url: str) -> AsyncEngine:
    # Reads never fail on a lone surrogate stored before the input edge refused them.
    engine = create_async_engine(async_url(url), json_deserializer=loads_stored)
    _prepare(engine.sync_engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    engine = create_engine(sync_url(url))
    _prepare(engine)
    try:
        with engine.begin() as connection:
            _take_migration_lock(connection)
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def _take_migration_lock(connection: Connection) -> None:
    """Replicas starting together would each find an empty database and create the same
    tables; a lock held to the end of the migration's transaction makes the others wait
    and then find the schema current."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
    elif connection.dialect.name == "sqlite":
        # pysqlite opens no transaction for DDL on its own; this one takes the write lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
