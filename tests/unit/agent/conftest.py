from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from qbox.agent.app import create_app
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.settings import AgentSettings
from tests.unit.agent.fakes import FakeImageStore

SECRET = "s3cret-host-key"


@dataclass
class AgentUnderTest:
    app: FastAPI
    client: httpx.AsyncClient
    runtime: FakeRuntime
    store: FakeImageStore
    settings: AgentSettings
    digest: str


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentUnderTest]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                             prepare_host=False)
    runtime = FakeRuntime()
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    app = create_app(settings, runtime=runtime, store=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://agent/internal/v1",
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as client:
            yield AgentUnderTest(app, client, runtime, store, settings, digest)
