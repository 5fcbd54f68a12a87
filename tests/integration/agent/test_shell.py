"""Interactive shells on a real PTY under crun and under gVisor, through a served agent.

The agent runs in process under uvicorn on a unix socket (the WebSocket stack
of production, with its flow control), and the tests speak to it with the
``websockets`` client, as the control plane does. Markers are printed with
shell arithmetic (``M-$((1+1))`` prints ``M-2``) so that the terminal's echo
of the input never matches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from qbox.agent.app import create_app
from qbox.agent.runtime.base import CommandStartError, ConsoleSize, ProcessSpec
from qbox.agent.settings import AgentSettings
from tests.integration.agent.conftest import SECRET, Agent, RootfsStore, client_for

GRACE = 1.0
CHUNK = 64 * 1024


@dataclass
class Served:
    agent: Agent
    socket: Path

    def connect(self, sandbox: str, query: str = "", max_queue: int = 16) -> connect:
        return unix_connect(str(self.socket),
                            f"ws://agent/internal/v1/sandboxes/{sandbox}/shell?{query}",
                            additional_headers={"Authorization": f"Bearer {SECRET}"},
                            max_queue=max_queue)


@pytest.fixture
async def served(data_dir: Path, test_rootfs: Path) -> AsyncIterator[Served]:
    settings = AgentSettings(data_dir=data_dir, secret=SECRET, kill_grace_seconds=GRACE,
                             runtime=os.environ.get("QBOX_AGENT_RUNTIME", "auto"))
    app = create_app(settings, store=RootfsStore(test_rootfs))  # type: ignore[arg-type]
    # A short path: unix socket paths are limited to 108 bytes.
    socket_dir = Path(tempfile.mkdtemp(prefix="qsh", dir="/tmp"))
    socket = socket_dir / "agent.sock"
    server = uvicorn.Server(uvicorn.Config(app, uds=str(socket), lifespan="on",
                                          log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        async with client_for(app) as client:
            agent = Agent(app, client, settings)
            try:
                yield Served(agent, socket)
            finally:
                for sandbox in (await client.get("/sandboxes")).json():
                    await client.delete(f"/sandboxes/{sandbox['id']}")
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 30)
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture(params=["crun", "runsc"])
def runtime(request: pytest.FixtureRequest) -> str:
    if request.param == "runsc":
        assert shutil.which("runsc") is not None, "runsc is not installed (run make setup)"
    return str(request.param)


@pytest.fixture
async def sandbox(runtime: str, served: Served) -> str:
    return await served.agent.create(**({"runtime": "runsc"} if runtime == "runsc" else {}))


def terminal_name(runtime: str) -> str:
    """What ``readlink /proc/self/fd/0`` shows for the shell's terminal. Under gVisor the
    PTY is the host's, imported into the sandbox as a host file: ``tty`` says "not a
    tty" there (though isatty holds), and the sandbox's /dev/pts stays empty."""
    return r"/dev/pts/\d+" if runtime == "crun" else r"host:\[\d+\]"


class Terminal:
    """The client end of a shell: what it printed so far, and waiting for a pattern."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.output = b""
        self.chunk_sizes: list[int] = []

    async def type(self, text: str) -> None:
        await self.ws.send(text.encode())

    async def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output.decode(errors="replace"))
            if found:
                return found
            remaining = deadline - time.monotonic()
            try:
                frame = await asyncio.wait_for(self.ws.recv(), max(remaining, 0.01))
            except TimeoutError:
                raise AssertionError(f"{pattern!r} not in {self.output[-2000:]!r}") from None
            assert isinstance(frame, bytes)
            self.chunk_sizes.append(len(frame))
            self.output += frame

    async def until_closed(self, timeout: float = 20) -> tuple[int | None, str | None]:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
                assert isinstance(frame, bytes)
                self.output += frame
        return self.ws.close_code, self.ws.close_reason


async def _processes(served: Served, sandbox: str) -> list[str]:
    ps = await served.agent.exec(sandbox, "ps", "-e", "-o", "args=")
    return [line.strip() for line in ps["stdout"].splitlines()]


async def test_a_login_shell_on_a_real_terminal(served: Served, sandbox: str, runtime: str) -> None:
    async with served.connect(sandbox, "cols=100&rows=30") as ws:
        term = Terminal(ws)
        await term.type("echo TTY-$((1+1))-$(readlink /proc/self/fd/0)-$(tty); "
                        "test -t 0 && test -t 1 && echo ISATTY-$((1+1)); "
                        "echo ID-$(id -u)-$(id -g)\n")
        name = terminal_name(runtime)
        await term.expect(rf"TTY-2-{name}-" + (name if runtime == "crun" else "not a tty"))
        await term.expect(r"ISATTY-2")
        await term.expect(r"ID-1000-1000")
        await term.type('echo "ENV-$((1+1)) $HOME $TERM $USER $LOGNAME $SHELL $PWD"\n')
        await term.expect(r"ENV-2 /home/user xterm-256color user user /bin/bash /home/user")
        if runtime == "crun":
            # The user's own, as login makes it (the runtime creates it as root:tty).
            await term.type("echo OWNER-$((1+1))-$(stat -c %U:%G:%a $(tty))\n")
            await term.expect(r"OWNER-2-user:tty:620")
        await term.type("shopt -q login_shell && echo LOGIN-$((2+3))\n")
        await term.expect(r"LOGIN-5")
        await term.type("echo SIZE-$((1+1)) $(stty size)\n")
        await term.expect(r"SIZE-2 30 100")
        await ws.send('{"type":"resize","cols":120,"rows":40}')
        await term.type("echo SIZE-$((2+2)) $(stty size)\n")
        await term.expect(r"SIZE-4 40 120")
        # Ctrl-C interrupts the foreground job; the shell carries on.
        await term.type("sleep 100; echo SLEPT-$((1+1))\n")
        await asyncio.sleep(1)
        started = time.monotonic()
        await ws.send('{"type":"input","data":"\\u0003"}')
        await term.type("echo STATUS-$((1+1))-$?\n")
        await term.expect(r"STATUS-2-130", timeout=10)
        assert time.monotonic() - started < 5
        assert "SLEPT-2" not in term.output.decode(errors="replace")
        # Everything the shell printed arrives before the close that reports its exit.
        await term.type("seq 1 20000 | tail -n 3; echo LAST-$((1+1)); exit 3\n")
        code, reason = await term.until_closed()
        assert (code, reason) == (1000, "exit 3")
        text = term.output.decode(errors="replace")
        assert "19999" in text and "20000" in text and "LAST-2" in text


async def test_a_command_runs_in_the_login_shell(served: Served, sandbox: str) -> None:
    async with served.connect(sandbox, "cols=90&rows=20&command=stty+size%3B+exit+7") as ws:
        term = Terminal(ws)
        assert await term.until_closed() == (1000, "exit 7")
        assert "20 90" in term.output.decode()


async def test_closing_the_websocket_kills_the_whole_tree(served: Served, sandbox: str) -> None:
    async with served.connect(sandbox) as ws:
        term = Terminal(ws)
        await term.type("sleep 1000 & setsid -w sleep 1001 & echo STARTED-$((1+1))\n")
        await term.expect("STARTED-2")
        for _ in range(50):
            running = await _processes(served, sandbox)
            if "sleep 1000" in running and "sleep 1001" in running:
                break
            await asyncio.sleep(0.1)
        assert "sleep 1000" in running and "sleep 1001" in running, running
    # The client has gone: the shell and everything it started end within the grace.
    deadline = time.monotonic() + GRACE + 10
    while time.monotonic() < deadline:
        left = [p for p in await _processes(served, sandbox)
                if p.startswith(("sleep", "setsid", "-bash", "bash"))]
        if not left:
            break
        await asyncio.sleep(0.2)
    assert not left


async def test_deleting_the_sandbox_ends_the_shell(served: Served, sandbox: str) -> None:
    async with served.connect(sandbox) as ws:
        term = Terminal(ws)
        await term.type("echo READY-$((1+1))\n")
        await term.expect("READY-2")
        started = time.monotonic()
        r = await served.agent.client.delete(f"/sandboxes/{sandbox}")
        assert r.status_code == 204
        code, reason = await term.until_closed(timeout=15)
        assert code == 1000 and reason is not None and reason.startswith("exit "), (code, reason)
        assert time.monotonic() - started < 15


async def test_two_shells_on_one_sandbox_are_independent(served: Served, sandbox: str,
                                                         runtime: str) -> None:
    async with served.connect(sandbox, "cols=81&rows=21") as ws_a, \
            served.connect(sandbox, "cols=82&rows=22") as ws_b:
        a, b = Terminal(ws_a), Terminal(ws_b)
        await a.type("echo A-$((1+1)) $$ $(stty size)\n")
        await b.type("echo B-$((2+2)) $$ $(stty size)\n")
        shell_a = (await a.expect(r"A-2 (\d+) 21 81")).group(1)
        shell_b = (await b.expect(r"B-4 (\d+) 22 82")).group(1)
        assert shell_a != shell_b
        if runtime == "crun":
            await a.type("echo T-$((1+1))-$(tty)\n")
            await b.type("echo T-$((1+1))-$(tty)\n")
            tty_a = (await a.expect(r"T-2-(/dev/pts/\d+)")).group(1)
            tty_b = (await b.expect(r"T-2-(/dev/pts/\d+)")).group(1)
            assert tty_a != tty_b
        await a.type("exit 4\n")
        assert await a.until_closed() == (1000, "exit 4")
        # The other shell is untouched by the first one's end.
        await b.type("echo STILL-$((3+3))\n")
        await b.expect("STILL-6")
        assert "B-4" not in a.output.decode(errors="replace")
        assert "A-2" not in b.output.decode(errors="replace")


async def test_a_runtime_that_fails_is_not_waited_on(served: Served, sandbox: str,
                                                     runtime: str) -> None:
    manager = served.agent.app.state.agent.sandboxes
    driver = manager._runtimes.of(manager.get(sandbox))
    scratch = driver._scratch
    consoles = Path(tempfile.gettempdir())
    before = set(scratch.iterdir()) | set(consoles.glob("qbox-console-*"))
    started = time.monotonic()
    with pytest.raises(CommandStartError) as caught:
        await driver.exec(sandbox, ProcessSpec(["/no/such/shell"], {}, "/", 1000, 1000,
                                               terminal=True, console_size=ConsoleSize(80, 24)))
    assert "/no/such/shell" in caught.value.message
    assert time.monotonic() - started < 10
    # No socket (nor its private directory), process or error file left.
    assert set(scratch.iterdir()) | set(consoles.glob("qbox-console-*")) == before


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_reader_that_stalls_stalls_the_shell_not_the_agent(served: Served,
                                                                    sandbox: str) -> None:
    async with served.connect(sandbox, "command=yes", max_queue=1) as ws:
        term = Terminal(ws)
        await term.expect("y\r\ny")
        await asyncio.sleep(1)  # whatever buffers there are fill up first
        before = _rss_kib()
        await asyncio.sleep(6)  # nobody reads
        growth = _rss_kib() - before
        print(f"RSS growth while the client did not read: {growth} KiB")
        assert growth < 4 * 1024
        for _ in range(200):
            frame = await asyncio.wait_for(ws.recv(), 10)
            term.chunk_sizes.append(len(frame))
        assert max(term.chunk_sizes) <= CHUNK
