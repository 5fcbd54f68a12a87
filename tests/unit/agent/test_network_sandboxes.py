"""The sandbox manager and the agent API over the (in-memory) network."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection
from pathlib import Path

import pytest

from qbox.agent.network import Attachment, FakeNetwork
from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.conftest import AgentUnderTest
from tests.unit.agent.fakes import FakeImageStore


class RecordingNetwork(FakeNetwork):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.internet: dict[str, bool] = {}
        self.started_with: set[str] | None = None

    async def attach(self, sandbox_id: str, *, internet: bool) -> Attachment:
        self.internet[sandbox_id] = internet
        return await super().attach(sandbox_id, internet=internet)

    async def start(self, keep: Collection[str]) -> dict[str, Attachment]:
        self.started_with = set(keep)
        return await super().start(keep)


def _manager(tmp_path: Path, network: FakeNetwork) -> SandboxManager:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    return SandboxManager(settings, FakeRuntime(), FakeImageStore(tmp_path / "images"),
                          DirectoryFilesystem(), network)


@pytest.fixture
def digest(tmp_path: Path) -> str:
    return FakeImageStore(tmp_path / "images").add("base")


async def test_create_attaches_and_mounts_resolv_conf(tmp_path: Path, digest: str) -> None:
    network = RecordingNetwork(tmp_path / "network")
    manager = _manager(tmp_path, network)
    online = await manager.create(SandboxParams(new_sandbox_id(), digest))
    offline = await manager.create(SandboxParams(new_sandbox_id(), digest,
                                                 allow_internet_access=False))
    assert network.internet == {online.id: True, offline.id: False}
    assert (online.address, offline.address) == ("10.213.0.2", "10.213.0.6")
    config = json.loads((online.directory / "config.json").read_text())
    resolv = [m for m in config["mounts"] if m["destination"] == "/etc/resolv.conf"]
    assert resolv == [{"destination": "/etc/resolv.conf", "type": "bind",
                       "source": str(tmp_path / "network" / online.id / "resolv.conf"),
                       "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}]
    await manager.delete(online.id)
    assert network.get(online.id) is None and network.get(offline.id) is not None


async def test_a_failed_boot_detaches(tmp_path: Path, digest: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    network = RecordingNetwork(tmp_path / "network")
    manager = _manager(tmp_path, network)

    async def broken_run(*args: object) -> None:
        raise RuntimeError("crun said no")

    monkeypatch.setattr(FakeRuntime, "run", broken_run)
    sandbox_id = new_sandbox_id()
    with pytest.raises(RuntimeError):
        await manager.create(SandboxParams(sandbox_id, digest))
    assert sandbox_id in network.internet and network.get(sandbox_id) is None


async def test_restart_keeps_the_network_of_the_sandboxes_it_still_holds(
        tmp_path: Path, digest: str) -> None:
    network = RecordingNetwork(tmp_path / "network")
    first = _manager(tmp_path, network)
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest))
    await first.close()
    second = _manager(tmp_path, network)
    await second.load()
    assert network.started_with == {sandbox.id}
    assert second.get(sandbox.id).address == sandbox.address


async def test_api_takes_allow_internet_access_and_shows_the_address(
        agent: AgentUnderTest) -> None:
    body = {"id": new_sandbox_id(), "imageDigest": agent.digest, "allowInternetAccess": False}
    r = await agent.client.post("/sandboxes", json=body)
    assert r.status_code == 201, r.text
    first = str(ipaddress.ip_network(agent.settings.network_pool)[2])  # slot 0's sandbox end
    assert r.json()["address"] == first
    r = await agent.client.get(f"/sandboxes/{body['id']}")
    assert r.json() == {"id": body["id"], "status": "running", "address": first}
    state = json.loads((agent.settings.sandboxes_dir / body["id"] / "sandbox.json").read_text())
    assert state["allowInternetAccess"] is False


def test_network_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QBOX_NETWORK", "off")
    monkeypatch.setenv("QBOX_NETWORK_POOL", "10.99.0.0/20")
    monkeypatch.setenv("QBOX_NETWORK_DNS", "192.0.2.53, 198.51.100.53")
    monkeypatch.setenv("QBOX_NETWORK_BLOCKED", "203.0.113.7/32")
    settings = AgentSettings.from_env(data_dir=tmp_path)
    assert settings.network is False and settings.network_pool == "10.99.0.0/20"
    assert settings.network_dns == ("192.0.2.53", "198.51.100.53")
    assert settings.network_blocked == ("203.0.113.7/32",)
    assert settings.network_dir == tmp_path / "network"
