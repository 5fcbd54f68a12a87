"""A sandbox that dies under a command: the caller learns why, in plain words.

The fake runtime acts out gVisor's case: the sandbox's init dies while a
command runs, and the command's end is unknown (its waiter lost the sandbox).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qbox.agent.rootfs import DirectoryFilesystem
from qbox.agent.runtime.base import ExitStatus, ProcessSpec
from qbox.agent.runtime.fake import FakeProcess, FakeRuntime
from qbox.agent.sandbox import SandboxParams, SandboxStatus
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
import signal as signals
from qbox.core.errors import SandboxNotActiveError
from qbox.core.ids import new_sandbox_id
from qbox.core.sandbox_ends import RUNTIME_STOPPED
from tests.unit.agent.fakes import FakeImageStore


class _LostProcess:
    """A command whose sandbox is killed as it ends; its end is unknown (-1), as runsc's
    waiter reports it."""

    def __init__(self, inner: FakeProcess, runtime: FakeRuntime, container_id: str) -> None:
        self._inner, self._runtime, self._container_id = inner, runtime, container_id
        self.pid, self.stdin, self.stdout, self.stderr = inner.pid, inner.stdin, inner.stdout, inner.stderr
        self.console = None

    async def wait(self) -> ExitStatus:
        await self._inner.wait()
        await self._runtime.kill(self._container_id, signals.SIGKILL)
        return ExitStatus(-1)

    def send_signal(self, signo: int) -> None:
        self._inner.send_signal(signo)

    async def signal_tree(self, signo: int) -> int:
        return await self._inner.signal_tree(signo)


class _DyingRuntime(FakeRuntime):
    async def exec(self, container_id: str, process: ProcessSpec, *,  # type: ignore[override]
                   stdin: bool = False) -> _LostProcess:
        inner = await super().exec(container_id, process, stdin=stdin)
        return _LostProcess(inner, self, container_id)


@pytest.fixture
def manager(tmp_path: Path) -> SandboxManager:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    store = FakeImageStore(tmp_path / "images")
    store.add("base")
    return SandboxManager(settings, _DyingRuntime(), store, DirectoryFilesystem())


async def test_an_exec_whose_sandbox_died_is_a_409_with_the_reason(
        manager: SandboxManager, tmp_path: Path) -> None:
    digest = FakeImageStore(tmp_path / "images").add("base")
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest))
    try:
        with pytest.raises(SandboxNotActiveError) as raised:
            await manager.exec(sandbox.id, ["sh", "-c", "echo 'urpc method failed' >&2"])
        assert raised.value.details == {"currentState": "stopped", "reason": RUNTIME_STOPPED}
        assert "urpc" not in raised.value.message and "signal" not in raised.value.message
        assert manager.get(sandbox.id).status is SandboxStatus.STOPPED
        # Every later call says the same, with the same words.
        with pytest.raises(SandboxNotActiveError) as again:
            await manager.exec(sandbox.id, ["true"])
        assert again.value.details["reason"] == RUNTIME_STOPPED
    finally:
        await manager.delete(sandbox.id)
        await manager.close()
