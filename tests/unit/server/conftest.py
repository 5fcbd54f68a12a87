from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qbox.server.app import Startup, create_app
from qbox.server.settings import ServerSettings
from tests.postgres import Cluster, running_cluster
from tests.unit.server.agent_host import SECRET, RunningAgent
from tests.unit.server.helpers import remember_database

# The API tests run on both databases the control plane supports.
DATABASES = ("sqlite", "postgresql")


@dataclass
class Harness:
    client: TestClient
    agent: RunningAgent
    admin_key: str
    settings: ServerSettings

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}


def make_harness(data_dir: Path, agent: RunningAgent | None = None, *, database: str | None,
                 **settings_kw: object) -> Iterator[Harness]:
    """The control plane over a real agent (its own, or ``agent``, which outlives it).

    ``database`` is the ``database`` fixture's URL (None: SQLite in ``data_dir``).
    """
    settings = ServerSettings(data_dir=data_dir, agent_secret=SECRET, database_url=database,
                              **settings_kw)  # type: ignore[arg-type]
    remember_database(data_dir, database)
    with contextlib.ExitStack() as stack:
        if agent is None:
            # The host trusts what the control plane trusts, as `qbox up` configures both.
            agent = stack.enter_context(RunningAgent(
                data_dir / "agent", trusted_registries=_split(settings.trusted_registries),
                import_dirs=_split(settings.import_dirs),
                image_gc_grace_seconds=settings.image_gc_grace_seconds))
        secrets: list[str] = []
        startup = Startup(builtin_templates={"python": "oci:/nonexistent:latest"},
                          local_agent=agent.client(), run_sandbox_loops=False,
                          on_first_admin=lambda admin: secrets.append(admin.secret or ''))
        client = stack.enter_context(TestClient(create_app(settings, startup),
                                                raise_server_exceptions=False))
        key = secrets[0] if secrets else (data_dir / "admin-key").read_text().strip()
        yield Harness(client=client, agent=agent, admin_key=key, settings=settings)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throw-away PostgreSQL server for the whole run, started by the first test that needs it."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL a test's control plane uses: None (SQLite in its data dir) or a fresh
    PostgreSQL database, dropped after the test."""
    if request.param == "sqlite":
        yield None
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    with cluster.database() as url:
        yield url


@pytest.fixture
def harness(tmp_path: Path, database: str | None) -> Iterator[Harness]:
    yield from make_harness(tmp_path, database=database)
