"""Runtime capabilities and the null isolation policy: the agent asks a driver's flags, never
its name, and a driver without a capability is never asked for what it lacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from qbox.agent import shell
from qbox.agent.isolation import NO_ISOLATION, IsolationPolicy, policy_for
from qbox.agent.rootfs import DirectoryFilesystem, LayerOptions, OverlayFilesystem
from qbox.agent.runtime.base import ConsoleSize, RuntimeCapability
from qbox.agent.runtime.factory import filesystem_for
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.core.ids import new_sandbox_id
from tests.unit.agent.fakes import FakeImageStore


def _runtime(capabilities: RuntimeCapability) -> FakeRuntime:
    runtime = FakeRuntime()
    runtime.capabilities = capabilities
    return runtime


def test_a_runtime_that_isolates_nothing_gets_the_null_policy_and_plain_directories(
        tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path, userns_base=300_000)
    assert policy_for(FakeRuntime(), settings) is NO_ISOLATION
    assert isinstance(filesystem_for(FakeRuntime(), settings), DirectoryFilesystem)

    isolating = _runtime(RuntimeCapability.ISOLATES)
    assert policy_for(isolating, settings) == IsolationPolicy.from_settings(settings)
    assert isinstance(filesystem_for(isolating, settings), OverlayFilesystem)


def test_the_null_policy_asks_for_nothing_and_acts_as_the_agent(tmp_path: Path) -> None:
    assert NO_ISOLATION.acting_ids(1000, 1000) is None
    assert NO_ISOLATION.host_ids(1000, 1000) == (1000, 1000)
    assert NO_ISOLATION.layer_options(64) == LayerOptions()
    assert NO_ISOLATION.sysfs_for(tmp_path, Path("/run/netns/x")) is None
    assert NO_ISOLATION.config_fields() == {"id_mapping": None, "seccomp": None,
                                            "seccomp_bpf": None, "rlimits": {},
                                            "no_swap": False}
    # A real policy, even without a user namespace, acts as the sandbox's users.
    assert IsolationPolicy().acting_ids(1000, 1000) == (1000, 1000)


@pytest.fixture
def given_terminals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    given: list[tuple[int, int]] = []
    monkeypatch.setattr(shell, "give_terminal", lambda master, uid: given.append((master, uid)))
    return given


@asynccontextmanager
async def _open_a_shell(tmp_path: Path, runtime: FakeRuntime,
                        isolation: IsolationPolicy) -> AsyncIterator[shell.ShellSession]:
    settings = AgentSettings(data_dir=tmp_path / "data", secret="x", runtime="fake")
    store = FakeImageStore(tmp_path / "images")
    digest = store.add("base")
    manager = SandboxManager(settings, runtime, store, DirectoryFilesystem(),
                             isolation=isolation)
    sandbox = await manager.create(SandboxParams(new_sandbox_id(), digest))
    try:
        session = await manager.open_shell(sandbox.id, ConsoleSize(80, 24), command="true")
        try:
            yield session
        finally:
            await session.terminate()
            session.close()
    finally:
        await manager.delete(sandbox.id)
        await manager.close()


async def test_the_terminal_is_given_to_the_user_on_a_runtime_with_host_ptys(
        tmp_path: Path, given_terminals: list[tuple[int, int]]) -> None:
    async with _open_a_shell(tmp_path, _runtime(RuntimeCapability.HOST_PTY),
                             IsolationPolicy()):
        assert [uid for _, uid in given_terminals] == [1000]


async def test_a_runtime_without_host_ptys_is_never_asked_for_its_terminal(
        tmp_path: Path, given_terminals: list[tuple[int, int]]) -> None:
    async with _open_a_shell(tmp_path, _runtime(RuntimeCapability.ISOLATES),
                             IsolationPolicy()):
        assert given_terminals == []


async def test_under_the_null_policy_the_terminal_stays_the_agents(
        tmp_path: Path, given_terminals: list[tuple[int, int]]) -> None:
    async with _open_a_shell(tmp_path, _runtime(RuntimeCapability.HOST_PTY), NO_ISOLATION):
        assert given_terminals == []
