from __future__ import annotations

from pathlib import Path

import pytest

from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams, SandboxStatus
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.errors import SandboxNotActiveError
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.fakes import FakeImageStore


def _manager(tmp_path: Path, runtime: FakeRuntime | None = None) -> SandboxManager:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    store = FakeImageStore(tmp_path / "images")
    return SandboxManager(settings, runtime or FakeRuntime(), store, DirectoryFilesystem())


@pytest.fixture
def digest(tmp_path: Path) -> str:
    return FakeImageStore(tmp_path / "images").add("base")


async def test_create_writes_state_identity_files_and_the_default_home(
        tmp_path: Path, digest: str) -> None:
    manager = _manager(tmp_path)
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest, {"A": "1"}, 2, 128))
    assert sandbox.status is SandboxStatus.RUNNING
    assert (sandbox.directory / "sandbox.json").is_file()
    assert (sandbox.directory / "config.json").is_file()
    assert (sandbox.rootfs / "etc" / "hostname").read_text() == f"{sandbox.id}\n"
    assert (sandbox.rootfs / "home" / "user").is_dir()


async def test_image_env_is_the_base_of_command_env(tmp_path: Path, digest: str) -> None:
    runtime = FakeRuntime()
    manager = _manager(tmp_path, runtime)
    manager._images.env = ("PATH=/opt/py/bin:/usr/bin:/bin", "LANG=C.UTF-8")  # type: ignore[attr-defined]
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest))
    result = await manager.exec(sandbox.id, ["sh", "-c", "echo $PATH $LANG"])
    assert result.stdout == "/opt/py/bin:/usr/bin:/bin C.UTF-8\n"


async def test_restart_with_the_container_gone_marks_it_stopped(tmp_path: Path, digest: str) -> None:
    first = _manager(tmp_path)
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest))
    await first.close()
    # A new agent whose runtime no longer has the container (host rebooted).
    second = _manager(tmp_path)
    await second.load()
    found = second.get(sandbox.id)
    assert found.status is SandboxStatus.STOPPED
    assert "lost" in (found.exit_reason or "")
    with pytest.raises(SandboxNotActiveError):
        await second.exec(sandbox.id, ["true"])
    await second.delete(sandbox.id)
    assert not sandbox.directory.exists()


async def test_restart_keeps_running_sandboxes(tmp_path: Path, digest: str) -> None:
    runtime = FakeRuntime()  # the runtime outlives the agent, as crun's state does
    first = _manager(tmp_path, runtime)
    sandbox = await first.create(SandboxParams(new_sandbox_id(), digest, {"K": "v"}))
    await first.close()
    second = _manager(tmp_path, runtime)
    await second.load()
    assert second.get(sandbox.id).status is SandboxStatus.RUNNING
    assert (await second.exec(sandbox.id, ["sh", "-c", "echo $K"])).stdout == "v\n"


async def test_load_removes_directories_without_a_readable_state(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    junk = tmp_path / "data" / "sandboxes" / "sb_junkjunk1"
    junk.mkdir(parents=True)
    (junk / "sandbox.json").write_text("{not json")
    await manager.load()
    assert not junk.exists()
    assert list(manager) == []


async def test_load_deletes_runtime_containers_without_a_sandbox(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text('{"root": {"path": "%s"}}' % (bundle / "rootfs"))
    await runtime.run("sb_orphan001", bundle)
    await _manager(tmp_path, runtime).load()
    assert await runtime.state("sb_orphan001") is None


async def test_failed_boot_leaves_nothing(tmp_path: Path, digest: str) -> None:
    runtime = FakeRuntime()

    async def failing_run(*args: object) -> None:
        raise RuntimeError("boom")

    runtime.run = failing_run  # type: ignore[method-assign]
    manager = _manager(tmp_path, runtime)
    sandbox_id = new_sandbox_id()
    with pytest.raises(RuntimeError):
        await manager.create(SandboxParams(sandbox_id, digest))
    assert not (tmp_path / "data" / "sandboxes" / sandbox_id).exists()
    assert list(manager) == []
