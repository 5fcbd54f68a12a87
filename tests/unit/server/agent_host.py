"""The real host agent under the control plane's unit tests: its app, the fake runtime, a fake store.

``RunningAgent`` runs ``qbox.agent.app`` on an event loop of its own (a thread,
as another process would), so it outlives a control plane that restarts.
The control plane reaches it through ``client()``: the real
``AgentClient`` over ``agent_bridge``, which records every call and shell.
Sandboxes are the fake runtime's: commands really run, on this machine.

What tests read or steer lives on the real parts: ``runtime`` (a FakeRuntime),
``store`` (``host_images.HostImageStore``), ``manager`` (the agent's
SandboxManager), ``calls``/``shells``/``faults`` (the wire), and ``capacity``
(what /health reports this host can give).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import qbox.agent.app as agent_app
from qbox.agent.app import create_app
from qbox.agent.processes import ProcessRecord
from qbox.agent.runtime.fake import FakeRuntime
from qbox.agent.sandbox import SandboxParams
from qbox.agent.sandboxes import SandboxManager
from qbox.agent.settings import AgentSettings
from qbox.server.agent_client import AgentClient, AgentEndpoint
from tests.unit.agent.interpreter_fixtures import FAKE_HOST, CopyingFilesystem
from tests.unit.server.agent_bridge import BridgeTransport, Call, Faults, ShellLink, shell_connector
from tests.unit.server.host_images import HostImageStore

T = TypeVar("T")
SECRET = "x"
# Roomy unless a test says otherwise: admission never refuses for this machine's size.
ROOMY = {"vcpus": 64, "memoryMb": 256 * 1024, "diskTotalMb": 1024 * 1024,
         "diskFreeMb": 1024 * 1024, "sandboxDisksMb": 0}
_SANDBOX_PATH = re.compile(r"/sandboxes/([^/]+)")


class RunningAgent:
    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        self.settings = AgentSettings(data_dir=data_dir / "data", secret=SECRET, runtime="fake",
                                      prepare_host=False, **settings)
        self.runtime = FakeRuntime()
        self.store = HostImageStore(data_dir / "images")
        self.store.env = (f"FAKE_SHELL_LOG={data_dir / 'shells.log'}",
                          'FAKE_KERNELS=[{"name": "python3", "language": "python", '
                          '"displayName": "Python 3"}]')
        self.app = create_app(self.settings, runtime=self.runtime, store=self.store,
                              filesystem=CopyingFilesystem())
        self.capacity = dict(ROOMY)
        self.calls: list[Call] = []
        self.shells: list[ShellLink] = []
        self.faults = Faults()
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal

    def __enter__(self) -> RunningAgent:
        with contextlib.ExitStack() as stack:
            patch = stack.enter_context(pytest.MonkeyPatch.context())
            patch.setattr(agent_app, "host_capacity", lambda *_: dict(self.capacity))
            self.portal = stack.enter_context(start_blocking_portal())
            stack.callback(self.portal.call, self.portal.stop, True)
            stack.callback(self.portal.call, self._end_every_container)
            stack.enter_context(self.portal.wrap_async_context_manager(
                self.app.router.lifespan_context(self.app)))
            self.manager.interpreters.host_argv = (sys.executable, str(FAKE_HOST))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    async def _end_every_container(self) -> None:
        # Sandboxes outlive an agent; the test's processes must not outlive the test.
        for container in await self.runtime.list():
            await self.runtime.delete(container.id)

    def client(self) -> AgentClient:
        """A control plane's client to this agent (each control plane makes its own)."""
        return AgentClient(
            AgentEndpoint("http://agent", SECRET),
            transport=BridgeTransport(self.app, self.portal, self.calls, self.faults),
            shell_connector=shell_connector(self.app, self.portal, self.shells, self.faults))

    # --- the agent's side, read on its loop ----------------------------------------

    @property
    def manager(self) -> SandboxManager:
        manager: SandboxManager = self.app.state.agent.sandboxes
        return manager

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` (a coroutine function or not) on the agent's loop."""
        return self.portal.call(function, *args)

    def sandbox_ids(self) -> list[str]:
        return self.call(lambda: [s.id for s in self.manager])  # type: ignore[no-any-return]

    def running_ids(self) -> list[str]:
        return self.call(lambda: [s.id for s in self.manager  # type: ignore[no-any-return]
                                  if s.status.value == "running"])

    def params(self, sandbox_id: str) -> SandboxParams:
        return self.call(lambda: self.manager.get(sandbox_id).params)  # type: ignore[no-any-return]

    def rootfs(self, sandbox_id: str) -> Path:
        return self.call(lambda: self.manager.get(sandbox_id).rootfs)  # type: ignore[no-any-return]

    def commands(self, sandbox_id: str) -> list[ProcessRecord]:
        return self.call(lambda: self.manager.processes(sandbox_id).list())  # type: ignore[no-any-return]

    def shell_log(self) -> list[dict[str, Any]]:
        """What the sandboxes' login shells noted (fake_login_shell.py): arguments, sizes."""
        log = self.data_dir / "shells.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def forget(self, sandbox_id: str) -> None:
        """The sandbox vanishes from the host, the control plane unaware."""
        self.call(self.manager.delete, sandbox_id)

    def kill_init(self, sandbox_id: str) -> None:
        """The sandbox's init dies (SIGKILL), as the OOM killer would do it."""
        self.call(self.runtime.kill, sandbox_id, signal.SIGKILL)

    # --- what the control plane asked -------------------------------------------------

    def requests(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def bodies(self, method: str, pattern: str) -> list[Any]:
        """The JSON bodies of the calls the agent app has read whole (one still arriving is
        not one yet: reading it half-way would be a race of the test, not of the code)."""
        return [c.json() for c in self.requests(method, pattern) if c.received]

    @property
    def deleted(self) -> list[str]:
        """The sandboxes the control plane deleted."""
        return [_SANDBOX_PATH.fullmatch(c.path)[1]  # type: ignore[index]
                for c in self.requests("DELETE", _SANDBOX_PATH.pattern)]

    @property
    def builds(self) -> list[dict[str, Any]]:
        return self.bodies("POST", "/builds")

    @property
    def gc_calls(self) -> list[list[str]]:
        return [body["keep"] for body in self.bodies("POST", "/images/gc")]

    @property
    def code_bodies(self) -> list[dict[str, Any]]:
        return self.bodies("POST", r"/sandboxes/[^/]+/code/execute")


@contextlib.contextmanager
def running_agent(data_dir: Path, **settings: Any) -> Iterator[RunningAgent]:
    with RunningAgent(data_dir, **settings) as agent:
        yield agent
