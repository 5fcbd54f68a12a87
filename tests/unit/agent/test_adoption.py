"""Restart adoption on its own: what an earlier agent left is sorted, and the lost are marked."""

from __future__ import annotations

import json
from pathlib import Path

from qbox.agent.adoption import find_survivors
from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.runtime.registry import Runtimes
from qbox.agent.sandbox import Sandbox, SandboxParams, SandboxStatus
from qbox.core.timefmt import utcnow


def _left(sandboxes: Path, sandbox_id: str, status: SandboxStatus, *, booted: bool = True,
          exit_reason: str | None = None, build: bool = False) -> Sandbox:
    """A sandbox directory as an earlier agent leaves it (its rootfs, its state file)."""
    directory = sandboxes / sandbox_id
    (directory / "rootfs").mkdir(parents=True)
    sandbox = Sandbox(SandboxParams(sandbox_id, "sha256:x", build=build), directory, utcnow(),
                      status=status, booted_at=utcnow() if booted else None,
                      exit_reason=exit_reason)
    sandbox.save()
    return sandbox


async def _run(runtime: FakeRuntime, sandbox: Sandbox) -> None:
    (sandbox.directory / "config.json").write_text(
        json.dumps({"root": {"path": str(sandbox.rootfs)}}))
    await runtime.run(sandbox.id, sandbox.directory)


def _state(sandbox: Sandbox) -> tuple[str, str | None]:
    saved = json.loads((sandbox.directory / "sandbox.json").read_text())
    return saved["status"], saved["exitReason"]


async def test_survivors_are_sorted_and_the_lost_marked_stopped(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    alive = _left(tmp_path, "sb_alive0001", SandboxStatus.RUNNING)
    await _run(runtime, alive)
    gone = _left(tmp_path, "sb_gone00001", SandboxStatus.RUNNING)
    interrupted = _left(tmp_path, "sb_boot00001", SandboxStatus.CREATING, booted=False)
    ended = _left(tmp_path, "sb_ended0001", SandboxStatus.STOPPED, exit_reason="oom")
    build = _left(tmp_path, "sb_build0001", SandboxStatus.RUNNING, build=True)
    await _run(runtime, build)

    found = await find_survivors(tmp_path, Runtimes(runtime), DirectoryFilesystem())

    assert [s.id for s in found.running] == [alive.id]
    assert [s.id for s in found.stopped] == [interrupted.id, ended.id, gone.id]
    assert [s.id for s in found.builds] == [build.id]
    assert _state(gone) == ("stopped", "lost: its init is gone (agent or host restarted)")
    assert _state(interrupted) == ("stopped", "boot interrupted")
    assert _state(ended) == ("stopped", "oom")
    assert _state(alive) == ("running", None)
    # Adoption removes nothing the manager takes on: the build's container is its to delete.
    assert {c.id for c in await runtime.list()} == {alive.id, build.id}


async def test_a_sandbox_of_a_runtime_gone_since_is_lost_for_that_reason(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    gvisor = _left(tmp_path, "sb_gvisor001", SandboxStatus.RUNNING)
    state = json.loads((gvisor.directory / "sandbox.json").read_text())
    (gvisor.directory / "sandbox.json").write_text(json.dumps({**state, "runtime": "runsc"}))

    found = await find_survivors(tmp_path, Runtimes(runtime), DirectoryFilesystem())

    assert [s.id for s in found.stopped] == [gvisor.id]
    assert _state(gvisor) == ("stopped", "lost: runtime runsc is not available")


async def test_an_unreadable_directory_and_an_orphan_container_are_removed(
        tmp_path: Path) -> None:
    runtime, other = FakeRuntime(), FakeRuntime()
    junk = tmp_path / "sandboxes" / "sb_junk00001"
    junk.mkdir(parents=True)
    (junk / "sandbox.json").write_text("{not json")
    orphan = _left(tmp_path / "elsewhere", "sb_orphan001", SandboxStatus.RUNNING)
    await _run(other, orphan)
    await _run(runtime, _left(tmp_path / "elsewhere", "sb_junk00001", SandboxStatus.RUNNING))

    found = await find_survivors(tmp_path / "sandboxes", Runtimes(runtime, {"runsc": other}),
                                 DirectoryFilesystem())

    assert (found.running, found.stopped, found.builds) == ([], [], [])
    assert not junk.exists()
    assert await runtime.list() == [] and await other.list() == []


async def test_no_sandboxes_directory_yet_finds_nothing(tmp_path: Path) -> None:
    found = await find_survivors(tmp_path / "absent", Runtimes(FakeRuntime()),
                                 DirectoryFilesystem())
    assert (found.running, found.stopped, found.builds) == ([], [], [])
