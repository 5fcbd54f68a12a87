"""Direct database access for tests that need rows the API cannot make yet."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from qbox.core.ids import new_id
from qbox.server.db.engine import sync_url
from qbox.server.db.tables import ApiKey, Sandbox, User
from qbox.server.services.keys import hash_secret, mint_secret


# The database of a control plane whose data dir does not hold it (PostgreSQL), by data dir,
# so that tests reach a control plane's rows by its data dir on either database.
_DATABASES: dict[Path, str] = {}


def remember_database(data_dir: Path, url: str | None) -> None:
    """The control plane in ``data_dir`` keeps its rows at ``url`` (None: SQLite in it)."""
    if url is not None:
        _DATABASES[data_dir] = url


def db_session(data_dir: Path) -> Session:
    url = _DATABASES.get(data_dir, f"sqlite:///{data_dir / 'qbox.db'}")
    # No pool: the connection closes with the session, so a test's database can be dropped.
    return Session(create_engine(sync_url(url), poolclass=NullPool))


def add_user_with_key(data_dir: Path, *, role: str = "member",
                      scopes: list[str] | None = None) -> tuple[str, str]:
    """Returns (user id, key secret)."""
    secret = mint_secret()
    with db_session(data_dir) as session:
        user = User(id=new_id("usr", 16), email=f"{new_id('u', 6)}@example.com", role=role)
        session.add(user)
        session.flush()
        session.add(ApiKey(id=new_id("key", 16), user_id=user.id, name="test", prefix=secret[:13],
                           secret_hash=hash_secret(secret), scopes=scopes or ["*"]))
        session.commit()
        return user.id, secret


def set_deadline(data_dir: Path, sandbox_id: str, deadline: datetime) -> None:
    with db_session(data_dir) as session:
        session.execute(update(Sandbox).where(Sandbox.id == sandbox_id).values(deadline_at=deadline))
        session.commit()


def eventually(check: Callable[[], object], seconds: float = 5.0) -> None:
    """Wait until ``check()`` holds (the agent runs on its own loop: its side lags a little)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
