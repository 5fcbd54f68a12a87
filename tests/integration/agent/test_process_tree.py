"""Killing a command kills its whole tree under real crun; a flood of output stays bounded.

Host pids of a sandbox's processes are found through /proc (their PID
namespace is the sandbox's), and each is waited for through a pidfd: the
tests wait on exits, they do not poll for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qbox.agent import proctree
from qbox.agent.app import create_app
from qbox.agent.settings import AgentSettings
from tests.integration.agent.conftest import SECRET, Agent, RootfsStore, client_for

GRACE = 1.0
CAP = 1024 * 1024


@pytest.fixture
async def tight_agent(data_dir: Path, test_rootfs: Path) -> AsyncIterator[Agent]:
    """An agent with a short kill grace and a 1 MiB output cap."""
    settings = AgentSettings(data_dir=data_dir, secret=SECRET,
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"),
                             kill_grace_seconds=GRACE, output_cap_bytes=CAP)
    app = create_app(settings, store=RootfsStore(test_rootfs))  # type: ignore[arg-type]
    async with app.router.lifespan_context(app), client_for(app) as client:
        agent = Agent(app, client, settings)
        try:
            yield agent
        finally:
            for sandbox in (await client.get("/sandboxes")).json():
                await client.delete(f"/sandboxes/{sandbox['id']}")


def _sandbox_namespace(agent: Agent, sandbox_id: str) -> str:
    state = agent.app.state.agent
    init = state.runtime._inits[sandbox_id]  # the init is the sandbox's PID namespace
    namespace = proctree.pid_namespace(init.pid)
    assert namespace is not None
    return namespace


def _host_pids(namespace: str, ns_pids: list[int]) -> list[int]:
    """The host pids of processes known by their pids in the sandbox."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or proctree.pid_namespace(int(entry)) != namespace:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    found[int(line.split()[-1])] = int(entry)
    assert set(ns_pids) <= found.keys(), (ns_pids, found)
    return [found[pid] for pid in ns_pids]


class Exits:
    """pidfds, readable once their process has exited."""

    def __init__(self, pids: list[int]) -> None:
        self.fds = [os.pidfd_open(pid) for pid in pids]

    async def all_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        waits = []
        for fd in self.fds:
            done: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, lambda f=done: f.done() or f.set_result(None))
            waits.append(done)
        try:
            await asyncio.wait_for(asyncio.gather(*waits), seconds)
            return True
        except TimeoutError:
            return False
        finally:
            for fd in self.fds:
                loop.remove_reader(fd)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)


async def _start(agent: Agent, sandbox: str, script: str) -> int:
    r = await agent.client.post(f"/sandboxes/{sandbox}/commands",
                                json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 200, r.text
    pid: int = r.json()["pid"]
    return pid


async def _printed_lines(agent: Agent, sandbox: str, pid: int, count: int) -> list[str]:
    record = agent.app.state.agent.sandboxes.processes(sandbox).get(pid)
    while len(lines := record.stdout.text().splitlines()) < count:
        await asyncio.wait_for(record.stdout.wait_for_more(len(record.stdout)), 10)
    return lines


async def _finished(agent: Agent, sandbox: str, pid: int) -> dict:  # type: ignore[type-arg]
    record = agent.app.state.agent.sandboxes.processes(sandbox).get(pid)
    await asyncio.wait_for(record.finished.wait(), 15)
    return (await agent.client.get(f"/sandboxes/{sandbox}/commands/{pid}")).json()  # type: ignore[no-any-return]


async def _no_sleep_inside(agent: Agent, sandbox: str) -> bool:
    ps = await agent.exec(sandbox, "ps", "-e", "-o", "comm=")
    return "sleep" not in ps["stdout"].split()


async def test_delete_kills_the_background_children_too(tight_agent: Agent) -> None:
    sandbox = await tight_agent.create()
    pid = await _start(tight_agent, sandbox, "sleep 1000 & echo $!; sleep 1000 & echo $!; wait")
    printed = await _printed_lines(tight_agent, sandbox, pid, 2)
    exits = Exits(_host_pids(_sandbox_namespace(tight_agent, sandbox), [int(p) for p in printed]))
    try:
        started = time.monotonic()
        r = await tight_agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=15")
        assert r.status_code == 204
        assert await exits.all_within(GRACE + 5)
        elapsed = time.monotonic() - started
        print(f"DELETE to the whole tree gone: {elapsed * 1000:.0f} ms")
        assert elapsed < GRACE  # SIGTERM did it: no SIGKILL was needed
        status = await _finished(tight_agent, sandbox, pid)
        assert status["signal"] == 15
        assert await _no_sleep_inside(tight_agent, sandbox)
    finally:
        exits.close()


async def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace(tight_agent: Agent) -> None:
    sandbox = await tight_agent.create()
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "print('ignoring', flush=True); time.sleep(1000)"
    pid = await _start(tight_agent, sandbox, f"python3 -c \"{stubborn}\" & echo $!; wait")
    printed = await _printed_lines(tight_agent, sandbox, pid, 2)  # its pid and "ignoring"
    child = next(int(line) for line in printed if line.isdigit())
    exits = Exits(_host_pids(_sandbox_namespace(tight_agent, sandbox), [child]))
    try:
        started = time.monotonic()
        r = await tight_agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=15")
        assert r.status_code == 204 and time.monotonic() - started < GRACE  # answers at once
        status = await _finished(tight_agent, sandbox, pid)
        assert status["signal"] == 15  # the shell went at the SIGTERM...
        assert not await exits.all_within(GRACE / 2)  # ...the python child did not...
        assert await exits.all_within(GRACE + 5)  # ...until the SIGKILL
        assert time.monotonic() - started >= GRACE
    finally:
        exits.close()


async def test_killing_an_exited_command_removes_what_it_left_running(tight_agent: Agent) -> None:
    sandbox = await tight_agent.create()
    pid = await _start(tight_agent, sandbox, "sleep 1000 >/dev/null 2>&1 & echo $!")
    status = await _finished(tight_agent, sandbox, pid)
    assert (status["alive"], status["exitCode"]) == (False, 0)
    printed = await _printed_lines(tight_agent, sandbox, pid, 1)
    # The orphan now hangs from the sandbox's init, still in the command's session.
    exits = Exits(_host_pids(_sandbox_namespace(tight_agent, sandbox), [int(printed[0])]))
    try:
        assert not await exits.all_within(0.1)
        other = await _start(tight_agent, sandbox, "exec sleep 1000")  # another command: spared
        r = await tight_agent.client.delete(f"/sandboxes/{sandbox}/commands/{pid}?signal=15")
        assert r.status_code == 204
        assert await exits.all_within(GRACE + 5)
        assert (await tight_agent.client.get(f"/sandboxes/{sandbox}/commands/{other}")
                ).json()["alive"] is True
        await tight_agent.client.delete(f"/sandboxes/{sandbox}/commands/{other}?signal=9")
        await _finished(tight_agent, sandbox, other)
        assert await _no_sleep_inside(tight_agent, sandbox)
    finally:
        exits.close()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_flood_of_output_keeps_the_agent_bounded(tight_agent: Agent) -> None:
    sandbox = await tight_agent.create()
    before = _rss_kib()
    started = time.monotonic()
    # 1 GiB on stdout against a 1 MiB cap (the agent runs in this process).
    pid = await _start(tight_agent, sandbox, "head -c 1073741824 /dev/zero | tr '\\0' x; echo fine >&2")
    status = await _finished(tight_agent, sandbox, pid)
    elapsed = time.monotonic() - started
    grown_mib = (_rss_kib() - before) / 1024
    logs = (await tight_agent.client.get(f"/sandboxes/{sandbox}/commands/{pid}/logs")).json()
    print(f"1 GiB through a {CAP >> 20} MiB cap: {elapsed:.1f} s, RSS grew {grown_mib:.1f} MiB")
    assert status["exitCode"] == 0  # the pipe kept draining past the cap
    assert logs["stdout"].startswith("x" * 1000)
    assert logs["stdout"].endswith("[qbox: output truncated: this stream exceeded 1 MiB]\n")
    assert len(logs["stdout"]) < CAP + 100
    assert logs["stderr"] == "fine\n"
    assert grown_mib < 32
