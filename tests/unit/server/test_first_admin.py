"""A database's first start: its schema and its first admin (API key and dashboard password)
made once, even by replicas starting together."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.exc import IntegrityError

from qbox.server.db.engine import alembic_config, make_async_engine, make_sessionmaker, migrate, sync_url
from qbox.server.db.tables import ApiKey, User
from qbox.server.services.bootstrap import ADMIN_EMAIL, AdminBootstrap, ensure_admin
from qbox.server.services.context import AgentPool, ServiceContext
from qbox.server.settings import ServerSettings
from tests.postgres import Cluster
from tests.qbox_process import free_port
from tests.unit.server.conftest import DATABASES, Harness

_EMPTY_NAMES = itertools.count(1)


@contextlib.asynccontextmanager
async def replica(data_dir: Path, database_url: str,
                  before_admin_insert: threading.Barrier | None = None) -> AsyncIterator[ServiceContext]:
    """One replica's services on the shared database; ``before_admin_insert`` holds its insert
    of the first admin until every replica has looked for an admin and found none."""
    engine = make_async_engine(database_url)
    if before_admin_insert is not None:
        def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO USERS"):
                before_admin_insert.wait(timeout=10)
        event.listen(engine.sync_engine, "before_cursor_execute", hold)
    settings = ServerSettings(data_dir=data_dir, database_url=database_url, agent_secret="x")
    try:
        yield ServiceContext(settings=settings, sessions=make_sessionmaker(engine), agents=AgentPool())
    finally:
        await engine.dispose()


async def counts(ctx: ServiceContext) -> tuple[int, int]:
    async with ctx.sessions() as session:
        admins = await session.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
        keys = await session.scalar(select(func.count()).select_from(ApiKey))
    return admins or 0, keys or 0


@pytest.fixture
def database_url(tmp_path: Path, database: str | None) -> str:
    """The replicas' shared database, migrated and empty: a SQLite file, or on PostgreSQL."""
    if database is not None:
        return database
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    migrate(url)
    return url


@pytest.fixture(params=DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing was ever done to (no schema): a new SQLite file, or on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    name = f"empty_{os.getpid()}_{next(_EMPTY_NAMES)}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield cluster.url(name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_replicas_starting_together_create_one_admin(tmp_path: Path, database_url: str) -> None:
    both_looked = threading.Barrier(2)
    results: dict[str, AdminBootstrap | Exception] = {}

    def start(name: str) -> None:
        async def run() -> AdminBootstrap:
            async with replica(tmp_path / name, database_url, both_looked) as ctx:
                return await ensure_admin(ctx)
        try:
            results[name] = asyncio.run(run())
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            results[name] = error

    # Each replica on its own thread and event loop, as two processes would be.
    threads = [threading.Thread(target=start, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(isinstance(result, AdminBootstrap) for result in results.values()), results
    outcomes = [result for result in results.values() if isinstance(result, AdminBootstrap)]
    winners = [outcome for outcome in outcomes if outcome.created]
    assert len(winners) == 1 and len(outcomes) == 2
    winner = winners[0]
    assert winner.secret is not None and winner.key_file.read_text() == winner.secret + "\n"
    assert stat.S_IMODE(winner.key_file.stat().st_mode) == 0o600
    assert winner.password is not None and winner.password_file.read_text() == winner.password + "\n"
    assert stat.S_IMODE(winner.password_file.stat().st_mode) == 0o600
    loser = next(outcome for outcome in outcomes if not outcome.created)
    assert loser.secret is None and not loser.key_file.exists()
    assert loser.password is None and not loser.password_file.exists()

    async def check() -> tuple[int, int]:
        async with replica(tmp_path / "a", database_url) as ctx:
            return await counts(ctx)
    assert asyncio.run(check()) == (1, 1)


async def test_a_later_start_creates_nothing(tmp_path: Path, database_url: str) -> None:
    async with replica(tmp_path / "a", database_url) as ctx:
        first = await ensure_admin(ctx)
    async with replica(tmp_path / "b", database_url) as ctx:
        again = await ensure_admin(ctx)
        assert await counts(ctx) == (1, 1)
    assert first.created and not again.created and again.secret is None and again.password is None
    assert not (tmp_path / "b" / "admin-key").exists() and not (tmp_path / "b" / "admin-password").exists()


def test_the_first_admins_password_logs_in_to_the_dashboard(harness: Harness) -> None:
    password_file = harness.settings.data_dir / "admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24  # token_urlsafe(18): 144 random bits

    wrong = harness.client.post("/auth/login", data={"email": ADMIN_EMAIL, "password": password + "x"})
    assert wrong.status_code == 401
    login = harness.client.post("/auth/login", data={"email": ADMIN_EMAIL, "password": password})
    assert login.status_code == 200, login.text
    assert login.json()["user"]["role"] == "admin"
    assert harness.client.get("/auth/session").json()["email"] == ADMIN_EMAIL


async def test_each_database_gets_a_password_of_its_own(tmp_path: Path, database_url: str) -> None:
    async with replica(tmp_path / "a", database_url) as ctx:
        first = await ensure_admin(ctx)
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(other_url)
    async with replica(tmp_path / "b", other_url) as ctx:
        second = await ensure_admin(ctx)
    assert first.password and second.password and first.password != second.password


async def test_a_taken_admin_address_without_any_admin_is_an_error(tmp_path: Path, database_url: str) -> None:
    # Not a race: the first admin was demoted and no admin is left, so nothing may be hidden.
    async with replica(tmp_path / "a", database_url) as ctx:
        await ensure_admin(ctx)
        async with ctx.sessions() as session:
            await session.execute(update(User).values(role="member"))
            await session.commit()
        with pytest.raises(IntegrityError):
            await ensure_admin(ctx)


# A replica's migration in a process of its own (Alembic's state is per process), started
# only once every replica is ready, so that they all find the database empty.
_MIGRATE = """
import pathlib, sys, time
from qbox.server.db.engine import migrate
pathlib.Path(sys.argv[2] + ".ready").touch()
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.001)
migrate(sys.argv[1])
"""


def migrate_together(url: str, gate: Path, replicas: int = 2) -> list[tuple[int, str]]:
    processes = [subprocess.Popen([sys.executable, "-c", _MIGRATE, url, f"{gate}{n}"],
                                  stderr=subprocess.PIPE, text=True) for n in range(replicas)]
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{gate}{n}.ready").exists() for n in range(replicas)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
            time.sleep(0.01)
        for n in range(replicas):
            Path(f"{gate}{n}").touch()
        return [(p.wait(60), p.stderr.read() if p.stderr else "") for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_replicas_migrating_an_empty_database_together_both_start(tmp_path: Path, empty_database: str) -> None:
    outcomes = migrate_together(empty_database, tmp_path / "go")
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    engine = create_engine(sync_url(empty_database))
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    assert current == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_two_qbox_servers_started_together_print_one_admin_key(tmp_path: Path, empty_database: str) -> None:
    """``qbox server`` itself, twice at once on one empty database: one prints the key and the
    dashboard password (once, with the login URL) and saves them, the other starts without
    either, and both work on both."""
    replicas = [(tmp_path / f"replica-{n}", free_port()) for n in range(2)]
    processes: list[subprocess.Popen[str]] = []
    try:
        for data_dir, port in replicas:
            env = {**os.environ, "QBOX_DATA_DIR": str(data_dir), "QBOX_DATABASE_URL": empty_database}
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "qbox", "server", "--port", str(port)], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for (_, port), process in zip(replicas, processes, strict=True):
            wait_until_serving(f"http://127.0.0.1:{port}", process)
        saved = [data_dir for data_dir, _ in replicas if (data_dir / "admin-key").exists()]
        assert len(saved) == 1
        assert [data_dir for data_dir, _ in replicas if (data_dir / "admin-password").exists()] == saved
        key = (saved[0] / "admin-key").read_text().strip()
        password = (saved[0] / "admin-password").read_text().strip()
        for _, port in replicas:
            me = httpx.get(f"http://127.0.0.1:{port}/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
            assert me.status_code == 200 and me.json()["role"] == "admin", me.text
            login = httpx.post(f"http://127.0.0.1:{port}/auth/login",
                               data={"email": ADMIN_EMAIL, "password": password})
            assert login.status_code == 200 and login.json()["user"]["role"] == "admin", login.text
    finally:
        for process in processes:
            process.terminate()
        outputs = [process.communicate(timeout=30)[0] for process in processes]
    printed = [re.findall(r"^\s+(qbox_\S+)$", output, re.MULTILINE) for output in outputs]
    assert sorted(printed) == [[], [key]], outputs
    assert [output.count(password) for output in outputs] in ([0, 1], [1, 0]), outputs
    announced = next(n for n, output in enumerate(outputs) if password in output)
    assert f"http://127.0.0.1:{replicas[announced][1]}/login" in outputs[announced]
    assert replicas[announced][0] == saved[0]


def wait_until_serving(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not start serving (exit status {process.poll()})")
