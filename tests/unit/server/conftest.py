from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qbox.server.app import Startup, create_app
from qbox.server.settings import ServerSettings
from tests.unit.server.fake_agent import FakeAgent


@dataclass
class Harness:
    client: TestClient
    agent: FakeAgent
    admin_key: str
    settings: ServerSettings

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}


def make_harness(data_dir: Path, agent: FakeAgent | None = None, **settings_kw: object) -> Iterator[Harness]:
    agent = agent or FakeAgent()
    settings = ServerSettings(data_dir=data_dir, agent_secret="x", **settings_kw)  # type: ignore[arg-type]
    secrets: list[str] = []
    startup = Startup(builtin_templates={"python": "oci:/nonexistent:latest"},
                      local_agent=agent, run_reaper=False,
                      on_admin_created=lambda secret, _path: secrets.append(secret))
    app = create_app(settings, startup)
    with TestClient(app, raise_server_exceptions=False) as client:
        key = secrets[0] if secrets else (data_dir / "admin-key").read_text().strip()
        yield Harness(client=client, agent=agent, admin_key=key, settings=settings)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)
