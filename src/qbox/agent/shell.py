"""An interactive shell in a sandbox: a process on a PTY whose master end the agent drives.

The runtime makes the PTY and hands its master end over (``exec`` of a
``terminal`` process); a ``ShellSession`` then reads output, writes input and
resizes, and ends the process tree when the client goes away.

Backpressure: output is read from the master only when asked for, and the
WebSocket relay asks again only once the previous chunk has been sent. A
client that stops reading stalls the shell's writes in the PTY's own (small)
buffer, and nothing piles up in the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal as signals
from typing import Any

from qbox.agent.openat2 import RootDir
from qbox.agent.runtime.base import ConsoleSize, ExitStatus, ProcessHandle
from qbox.agent.runtime.pipes import set_console_size

# The largest output chunk (one WebSocket frame each).
CHUNK_BYTES = 64 * 1024
# Once the shell has exited, how long its last output may take to show on the
# master: the kernel moves PTY data through a work queue, and under gVisor it
# crosses the sentry too.
DRAIN_SETTLE_SECONDS = 0.2
# A read this long means the terminal had more than one buffer's worth: a flood.
_FULL_READ = 4000
# How long a flood's next buffer is awaited to fill a frame (never for keystrokes).
COALESCE_SECONDS = 0.002
# The shells tried when /etc/passwd names none that the sandbox has.
FALLBACK_SHELLS = ("/bin/bash", "/bin/sh")
# Login shells that refuse to run anything: an account's, not the sandbox's.
_NO_LOGIN = ("nologin", "false")
_MAX_PASSWD_BYTES = 4 * 1024 * 1024
# <asm-generic/ioctls.h>: open the slave end of a PTY from its master (Linux ≥ 4.13).
_TIOCGPTPEER = 0x5441


def passwd_shell(passwd: str, name: str) -> str | None:
    """The login shell ``/etc/passwd`` gives ``name`` (None: no entry, or no usable shell)."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name:
            shell = fields[6].strip()
            if shell.startswith("/") and os.path.basename(shell) not in _NO_LOGIN:
                return shell
            return None
    return None


def login_shell(root: RootDir, name: str) -> str:
    """The user's shell from the sandbox's /etc/passwd if the sandbox has it, else the
    first fallback it has (the last one if none: the start then fails with a reason)."""
    passwd = (root.read_bytes("/etc/passwd", _MAX_PASSWD_BYTES) or b"").decode("utf-8", "replace")
    wanted = passwd_shell(passwd, name)
    for shell in (wanted, *FALLBACK_SHELLS) if wanted else FALLBACK_SHELLS:
        if root.read_bytes(shell, 0) is not None:
            return shell
    return FALLBACK_SHELLS[-1]


def give_terminal(master: int, uid: int) -> None:
    """Make the user the owner of their terminal, as login does: the runtime creates it
    as the sandbox's root (root:tty 0620), and a program that reopens it by name
    (``ttyname``) would be refused. The slave is reached from the master (TIOCGPTPEER)."""
    slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        os.fchown(slave, uid, -1)
    finally:
        os.close(slave)


def shell_argv(shell: str, command: str | None) -> list[str]:
    """A login shell: interactive, or running ``command`` (``-lc``, as sshd does)."""
    return [shell, "-l"] if command is None else [shell, "-lc", command]


class ShellSession:
    """The PTY master of a shell started by the runtime; owns the fd and closes it."""

    def __init__(self, handle: ProcessHandle, *, kill_grace: float) -> None:
        if handle.console is None:
            raise ValueError("the process was not started on a terminal")
        self._handle = handle
        self._fd = handle.console
        self._kill_grace = kill_grace
        os.set_blocking(self._fd, False)
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Task[ExitStatus] = asyncio.ensure_future(handle.wait())
        self._ended = False

    @property
    def pid(self) -> int:
        return self._handle.pid

    async def read(self) -> bytes:
        """The next output chunk (≤ CHUNK_BYTES); b"" once output has ended.

        It ends at EIO (nobody holds the terminal any more), or when the shell
        has exited and nothing more shows within DRAIN_SETTLE_SECONDS (a
        background job may keep the terminal open).
        """
        while not self._ended:
            chunk = self._read_now(CHUNK_BYTES)
            if chunk is not None:
                self._ended = not chunk
                return await self._more(chunk)
            if self._exited.done():
                if not await self._ready(timeout=DRAIN_SETTLE_SECONDS):
                    self._ended = True
            else:
                await self._ready()
        return b""

    async def _more(self, chunk: bytes) -> bytes:
        """``chunk`` and what else the master has, up to CHUNK_BYTES.

        One read gives at most a line-discipline buffer (4 KiB), and a frame per
        4 KiB would cost bulk output most of its speed. So while reads come back
        full (a flood, not keystrokes), more is awaited for up to COALESCE_SECONDS;
        a short read (an echo, a prompt) goes out at once.
        """
        parts, size = [chunk], len(chunk)
        while 0 < size < CHUNK_BYTES and len(parts[-1]) >= _FULL_READ:
            more = self._read_now(CHUNK_BYTES - size)
            if more is None and await self._ready(timeout=COALESCE_SECONDS):
                more = self._read_now(CHUNK_BYTES - size)
            if not more:
                break  # nothing yet (or the end, which the next read reports)
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def _read_now(self, limit: int) -> bytes | None:
        """What the master has now; None if nothing yet, b"" at its end."""
        try:
            return os.read(self._fd, limit)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                return b""
            raise

    async def _ready(self, *, writing: bool = False, timeout: float | None = None) -> bool:
        """Wait until the master can be read (or written), the shell exits, or
        ``timeout`` passes; say whether it is ready."""
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writing:
            self._loop.add_writer(self._fd, wake)
        else:
            self._loop.add_reader(self._fd, wake)
        try:
            waiting: set[asyncio.Future[Any]] = {ready}
            if not self._exited.done():
                waiting.add(self._exited)
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if writing:
                self._loop.remove_writer(self._fd)
            else:
                self._loop.remove_reader(self._fd)
            if not ready.done():
                ready.cancel()
        return ready.done() and not ready.cancelled()

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the shell's input; waits while the terminal's input
        buffer is full, and drops what is left once nobody reads it any more."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                if self._exited.done():
                    return
                await self._ready(writing=True)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EBADF):
                    return
                raise

    def resize(self, size: ConsoleSize) -> None:
        """Set the terminal's size; the kernel sends SIGWINCH to its foreground job."""
        with contextlib.suppress(OSError):
            set_console_size(self._fd, size.cols, size.rows)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exited)

    async def terminate(self) -> None:
        """End the shell's whole tree: SIGHUP, as a hung-up terminal would send (a shell
        passes it on to its jobs), then SIGKILL for what is left once the shell has
        exited or the grace period is over."""
        if not await self._handle.signal_tree(signals.SIGHUP):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), self._kill_grace)
        await self._handle.signal_tree(signals.SIGKILL)

    def close(self) -> None:
        """Close the master end (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._ended = True

