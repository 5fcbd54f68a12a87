from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams, SandboxStatus
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.errors import SandboxNotActiveError, TemplateNotReadyError
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
    assert result.record.stdout.text() == "/opt/py/bin:/usr/bin:/bin C.UTF-8\n"


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
    assert (await second.exec(sandbox.id, ["sh", "-c", "echo $K"])).record.stdout.text() == "v\n"


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


async def test_user_and_workdir_are_the_defaults_of_commands_and_survive_a_restart(
        tmp_path: Path, digest: str) -> None:
    runtime = FakeRuntime()
    manager = _manager(tmp_path, runtime)
    params = SandboxParams(new_sandbox_id(), digest, user="root", workdir="/srv/app")
    sandbox = await manager.create(params)
    (sandbox.rootfs / "srv" / "app").mkdir(parents=True)
    await manager.exec(sandbox.id, ["true"])
    await manager.exec(sandbox.id, ["true"], user="user", cwd="/tmp")
    [(_, default), (_, explicit)] = runtime.execs
    assert (default.uid, default.cwd) == (0, "/srv/app")
    assert (explicit.uid, explicit.cwd) == (1000, "/tmp")
    assert manager.files(sandbox.id).normalize("x") == "/root/x"
    await manager.close()

    again = _manager(tmp_path, runtime)
    await again.load()
    assert again.get(sandbox.id).params.user == "root"
    assert again.get(sandbox.id).params.workdir == "/srv/app"


async def test_a_missing_workdir_falls_back_to_the_home(tmp_path: Path, digest: str) -> None:
    runtime = FakeRuntime()
    manager = _manager(tmp_path, runtime)
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest, workdir="/nope"))
    await manager.exec(sandbox.id, ["true"])
    assert runtime.execs[0][1].cwd == "/home/user"


async def test_an_image_missing_from_the_store_is_pulled_from_image_pull_ref(
        tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    store: FakeImageStore = manager._images  # type: ignore[assignment]
    # The fake names an imported image by the hash of its ref.
    ref = "docker://registry.example/templates/t@sha256:" + "1" * 64
    digest = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
    with pytest.raises(TemplateNotReadyError):
        await manager.create(SandboxParams(new_sandbox_id(), digest))
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest, image_pull_ref=ref))
    assert sandbox.status is SandboxStatus.RUNNING
    assert store.imported == [(ref, "pull-" + digest[7:19])]
    other = "sha256:" + "2" * 64  # the ref gives another image: still not ready
    with pytest.raises(TemplateNotReadyError):
        await manager.create(SandboxParams(new_sandbox_id(), other, image_pull_ref=ref))
    with pytest.raises(TemplateNotReadyError, match="pulling bad failed"):
        await manager.create(SandboxParams(new_sandbox_id(), other, image_pull_ref="bad"))
