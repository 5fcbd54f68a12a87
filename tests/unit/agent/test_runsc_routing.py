"""Each sandbox runs under the runtime its spec names, for its whole life, across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams, SandboxStatus
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.errors import SandboxNotActiveError, TemplateNotReadyError
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.conftest import AgentUnderTest
from tests.unit.agent.fakes import FakeImageStore


def _manager(tmp_path: Path, crun: FakeRuntime, runsc: FakeRuntime | None) -> SandboxManager:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    return SandboxManager(settings, crun, FakeImageStore(tmp_path / "images"),
                          DirectoryFilesystem(),
                          runtimes={"runsc": runsc} if runsc is not None else None)


@pytest.fixture
def digest(tmp_path: Path) -> str:
    return FakeImageStore(tmp_path / "images").add("base")


async def test_every_operation_goes_to_the_runtime_the_sandbox_was_created_with(
        tmp_path: Path, digest: str) -> None:
    crun, runsc = FakeRuntime(), FakeRuntime()
    manager = _manager(tmp_path, crun, runsc)
    assert manager.runtime_names == ["crun", "runsc"]
    gvisor = await manager.create(SandboxParams(new_sandbox_id(), digest, runtime="runsc"))
    plain = await manager.create(SandboxParams(new_sandbox_id(), digest))

    assert [c.id for c in await runsc.list()] == [gvisor.id]
    assert [c.id for c in await crun.list()] == [plain.id]
    assert (await manager.exec(gvisor.id, ["echo", "hi"])).record.stdout.text() == "hi\n"
    record = await manager.start_command(gvisor.id, ["true"])
    await record.finished.wait()
    assert [container for container, _ in runsc.execs] == [gvisor.id, gvisor.id]
    assert crun.execs == []

    await manager.delete(gvisor.id)
    assert await runsc.list() == []
    assert [c.id for c in await crun.list()] == [plain.id]
    await manager.delete(plain.id)
    assert await crun.list() == []


async def test_the_runtime_is_kept_in_the_state_file_and_used_after_a_restart(
        tmp_path: Path, digest: str) -> None:
    crun, runsc = FakeRuntime(), FakeRuntime()  # their containers outlive the agent
    first = _manager(tmp_path, crun, runsc)
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest, runtime="runsc"))
    await first.close()
    assert json.loads((sandbox.directory / "sandbox.json").read_text())["runtime"] == "runsc"

    second = _manager(tmp_path, crun, runsc)
    await second.load()
    assert second.get(sandbox.id).status is SandboxStatus.RUNNING
    assert (await second.exec(sandbox.id, ["echo", "again"])).record.stdout.text() == "again\n"
    assert crun.execs == []
    # A crun container of the same id would have been deleted as an orphan instead.
    assert [c.id for c in await runsc.list()] == [sandbox.id]


async def test_a_state_file_without_a_runtime_is_crun(tmp_path: Path, digest: str) -> None:
    crun = FakeRuntime()
    first = _manager(tmp_path, crun, None)
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest))
    await first.close()
    state = json.loads((sandbox.directory / "sandbox.json").read_text())
    del state["runtime"]  # written by an agent from before runtimes could be chosen
    (sandbox.directory / "sandbox.json").write_text(json.dumps(state))

    second = _manager(tmp_path, crun, FakeRuntime())
    await second.load()
    assert second.get(sandbox.id).params.runtime == "crun"
    assert (await second.exec(sandbox.id, ["true"])).exit_code == 0


async def test_a_sandbox_whose_runtime_went_away_is_lost_but_can_be_deleted(
        tmp_path: Path, digest: str) -> None:
    first = _manager(tmp_path, FakeRuntime(), FakeRuntime())
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest, runtime="runsc"))
    await first.close()

    second = _manager(tmp_path, FakeRuntime(), None)  # runsc uninstalled meanwhile
    await second.load()
    found = second.get(sandbox.id)
    assert found.status is SandboxStatus.STOPPED
    assert found.exit_reason == "lost: runtime runsc is not available"
    with pytest.raises(SandboxNotActiveError):
        await second.exec(sandbox.id, ["true"])
    await second.delete(sandbox.id)
    assert not sandbox.directory.exists()


async def test_spawning_under_an_unavailable_runtime_is_refused(tmp_path: Path,
                                                                digest: str) -> None:
    manager = _manager(tmp_path, FakeRuntime(), None)
    with pytest.raises(TemplateNotReadyError) as caught:
        await manager.create(SandboxParams(new_sandbox_id(), digest, runtime="runsc"))
    assert caught.value.details == {"runtime": "runsc", "availableRuntimes": ["crun"]}
    assert list(manager) == []
    assert not (tmp_path / "data" / "sandboxes").exists() or \
        not any((tmp_path / "data" / "sandboxes").iterdir())


async def test_the_api_answers_409_for_an_unavailable_runtime_and_400_for_an_unknown_one(
        agent: AgentUnderTest) -> None:
    body = {"id": new_sandbox_id(), "imageDigest": agent.digest, "runtime": "runsc"}
    r = await agent.client.post("/sandboxes", json=body)
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "template_not_ready"
    assert error["details"] == {"runtime": "runsc", "availableRuntimes": ["crun"]}

    r = await agent.client.post("/sandboxes", json={**body, "runtime": "kata"})
    assert r.status_code == 400

    health = (await agent.client.get("/health")).json()
    assert health["runtimes"] == ["crun"]
    r = await agent.client.post("/sandboxes", json={**body, "runtime": "crun"})
    assert r.status_code == 201


async def test_gvisor_is_offered_only_when_wanted_and_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qbox.agent.runtime import factory

    assert AgentSettings.from_env().runsc is True
    monkeypatch.setenv("QBOX_AGENT_RUNSC", "off")
    assert AgentSettings.from_env().runsc is False
    off = AgentSettings(data_dir=tmp_path, runsc=False)
    assert await factory.create_runsc(off) is None
    assert await factory.create_runsc(AgentSettings(data_dir=tmp_path, runtime="fake")) is None
    monkeypatch.setattr(factory.shutil, "which", lambda name: None)
    assert await factory.create_runsc(AgentSettings(data_dir=tmp_path)) is None
