"""An agent whose sandboxes have Jupyter kernelspecs, and the fake kernel host in them."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qbox.agent.app import create_app
from qbox.agent.rootfs import DirectoryFilesystem, ImageLowers, LayerOptions, lower_list
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.conftest import SECRET
from tests.unit.agent.fakes import FakeImageStore

FAKE_HOST = Path(__file__).with_name("fake_kernel_host.py")
NDJSON = "application/x-ndjson"


class CopyingFilesystem(DirectoryFilesystem):
    """The image's files copied into the sandbox (the plain one starts empty)."""

    def prepare(self, sandbox_dir: Path, image_lowers: ImageLowers, seed: dict[str, bytes],
                options: LayerOptions = LayerOptions()) -> Path:
        merged = sandbox_dir / "rootfs"
        for lower in reversed(lower_list(image_lowers)):  # the base first, the top last
            shutil.copytree(lower, merged, symlinks=True, dirs_exist_ok=True)
        return super().prepare(sandbox_dir, image_lowers, seed, options)


def add_kernelspec(rootfs: Path, name: str, language: str,
                   directory: str = "usr/share/jupyter/kernels") -> None:
    spec_dir = rootfs / directory / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": name, "language": language}))


@dataclass
class CodeAgent:
    client: httpx.AsyncClient
    runtime: FakeRuntime
    manager: SandboxManager
    store: FakeImageStore
    with_kernels: str
    without_kernels: str
    # The agent's ASGI app, for tests that play the client's side by hand (a disconnect).
    app: Any = None

    async def create(self, digest: str | None = None, envs: dict[str, str] | None = None,
                     code_interpreter: str = "lazy") -> str:
        sandbox_id = new_sandbox_id()
        r = await self.client.post("/sandboxes", json={
            "id": sandbox_id, "imageDigest": digest or self.with_kernels, "envs": envs or {},
            "vcpus": 1, "memoryMb": 256, "codeInterpreter": code_interpreter})
        assert r.status_code == 201, r.text
        return sandbox_id

    async def execute(self, sandbox_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/sandboxes/{sandbox_id}/code/execute", json=body)

    async def events(self, sandbox_id: str, **body: Any) -> list[dict[str, Any]]:
        r = await self.execute(sandbox_id, **body)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(NDJSON)
        return [json.loads(line) for line in r.content.splitlines()]


def text_of(events: list[dict[str, Any]], stream: str = "stdout") -> str:
    return "".join(e["output"]["text"] for e in events
                   if e["kind"] == "output" and e["output"].get("stream") == stream)


def make_code_agent_fixture(ready_wait: float = 10.0) -> Callable[..., Any]:
    @pytest.fixture
    async def code_agent(tmp_path: Path) -> AsyncIterator[CodeAgent]:
        settings = AgentSettings(data_dir=tmp_path / "data", secret=SECRET, runtime="fake",
                                 prepare_host=False)
        runtime = FakeRuntime()
        store = FakeImageStore(tmp_path / "images")
        with_kernels = store.add("kernels")
        rootfs = store.rootfs_path(with_kernels)
        add_kernelspec(rootfs, "python3", "python")
        add_kernelspec(rootfs, "bash", "bash", "usr/local/share/jupyter/kernels")
        without_kernels = store.add("plain")
        app = create_app(settings, runtime=runtime, store=store,
                         filesystem=CopyingFilesystem())
        async with app.router.lifespan_context(app):
            manager: SandboxManager = app.state.agent.sandboxes
            manager.interpreters.host_argv = (sys.executable, str(FAKE_HOST))
            manager.interpreters.ready_wait = ready_wait
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://agent/internal/v1",
                headers={"Authorization": f"Bearer {SECRET}"},
            ) as client:
                yield CodeAgent(client, runtime, manager, store, with_kernels, without_kernels,
                                app)

    return code_agent
