"""The stdio pipes of a command started in a sandbox.

The runtime (crun) passes its own stdio straight to the command, so the
command writes into these pipes directly; the agent reads the other ends as
asyncio streams. We make the pipes ourselves rather than use asyncio's
``PIPE``: asyncio's ``Process.wait()`` waits for its pipes to close, which
for ``crun exec --detach`` would mean waiting for the command, not crun.

A terminal process has a PTY instead, whose master end the runtime sends
to a ``ConsoleSocket``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import subprocess
import tempfile
import termios
from pathlib import Path

from qbox.agent.runtime.base import CommandStartError, ProcessSpec, RuntimeFailure

# sun_path holds 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107


class ProcessPipes:
    def __init__(self, *, stdin: bool) -> None:
        self._fds: list[int] = []
        self.out_read, self.out_write = self._pipe()
        self.err_read, self.err_write = self._pipe()
        if stdin:
            self.in_read, self.in_write = self._pipe()
        else:
            self.in_read, self.in_write = subprocess.DEVNULL, -1

    def _pipe(self) -> tuple[int, int]:
        # O_CLOEXEC: the ends must reach only the one child they are handed to.
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        self._fds += [read_end, write_end]
        return read_end, write_end

    def _close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            os.close(fd)

    def close_child_ends(self) -> None:
        """After the child has them: our copies would keep EOF from ever coming."""
        for fd in (self.out_write, self.err_write, self.in_read):
            self._close(fd)

    def close_all(self) -> None:
        for fd in list(self._fds):
            self._close(fd)

    def read_stderr_now(self, limit: int = 65536) -> bytes:
        """What is in the stderr pipe right now, without waiting (for error messages)."""
        os.set_blocking(self.err_read, False)
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            try:
                chunk = os.read(self.err_read, limit - size)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    async def streams(
        self,
    ) -> tuple[asyncio.StreamWriter | None, asyncio.StreamReader, asyncio.StreamReader]:
        """Hand our ends to the event loop as streams (they are owned by it from here)."""
        loop = asyncio.get_running_loop()
        readers = []
        for fd in (self.out_read, self.err_read):
            readers.append(await _read_stream(loop, fd))
            self._fds.remove(fd)
        writer = None
        if self.in_write >= 0:
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
                os.fdopen(self.in_write, "wb", buffering=0))
            self._fds.remove(self.in_write)
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return writer, readers[0], readers[1]


async def _read_stream(loop: asyncio.AbstractEventLoop, fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 20)
    protocol = asyncio.StreamReaderProtocol(reader)
    await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", buffering=0))
    return reader


def ended_stream() -> asyncio.StreamReader:
    """A stream already at EOF: the stdout/stderr of a terminal process (its output is the PTY's)."""
    reader = asyncio.StreamReader()
    reader.feed_eof()
    return reader


class ConsoleSocket:
    """Where the runtime hands over a terminal's master end (OCI ``--console-socket``).

    The runtime connects, sends the PTY master with SCM_RIGHTS and hangs up.
    The socket listens before the runtime starts (its connect would fail
    otherwise); ``receive`` runs beside the wait for the runtime, so a runtime
    that fails before it connects is noticed rather than waited on.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self._own_dir: Path | None = None
        path = directory / name
        if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
            # A deep data directory (a test's) leaves no room in sun_path: a
            # private directory of our own (0700) holds the socket instead.
            self._own_dir = Path(tempfile.mkdtemp(prefix="qbox-console-"))
            path = self._own_dir / name
        self.path = path
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.bind(str(path))
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    async def receive(self) -> int:
        """The master end's fd (ours to close), from the runtime's one connection."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                except BlockingIOError:
                    await _readable(loop, conn.fileno())
                    continue
                if not fds:
                    raise ConnectionError("the runtime hung up without sending the terminal")
                for extra in fds[1:]:
                    os.close(extra)
                os.set_inheritable(fds[0], False)
                return fds[0]

    async def receive_from(self, runtime: asyncio.subprocess.Process,
                           settle: float = 5.0) -> tuple[int, int | None]:
        """The runtime's exit code and the master end it sent (None if none came).

        A runtime that exits 0 has sent the terminal already: it is waited for
        at most ``settle`` seconds more.
        """
        receiving = asyncio.ensure_future(self.receive())
        exiting = asyncio.ensure_future(runtime.wait())
        try:
            await asyncio.wait({receiving, exiting}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done() and exiting.result() == 0:
                await asyncio.wait({receiving}, timeout=settle)
            master = None
            if receiving.done() and not receiving.cancelled() and receiving.exception() is None:
                master = receiving.result()
            return await exiting, master
        finally:
            for task in (receiving, exiting):
                task.cancel()

    def close(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)
        if self._own_dir is not None:
            self._own_dir.rmdir()
            self._own_dir = None


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def set_console_size(master: int, cols: int, rows: int) -> None:
    """Size a terminal through its master end (TIOCSWINSZ; the kernel tells its foreground
    job with SIGWINCH)."""
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def start_on_terminal(argv: list[str], console: ConsoleSocket, error_file: Path,
                            process: ProcessSpec, runtime: str, *, new_session: bool = False) -> int:
    """Run a runtime's ``exec … --console-socket`` (``argv``) and return the PTY master it
    sent, sized as ``process`` asks (ours to close).

    The runtime's errors go to ``error_file``, not a pipe: nothing reads it unless
    the start fails, and a pipe nobody reads any more would kill a runtime helper
    that keeps it (runsc's waiter) with SIGPIPE.
    """
    master: int | None = None
    try:
        with open(error_file, "w+b") as errors:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors.fileno(),
                start_new_session=new_session)
            rc, master = await console.receive_from(proc)
            errors.seek(0)
            message = errors.read(65536).decode(errors="replace").strip()
        if rc != 0:
            raise CommandStartError(f"cannot start {process.args[0]!r} on a terminal: {message}",
                                    details={"runtime": runtime})
        if master is None:
            raise RuntimeFailure(f"{runtime} exec started {process.args[0]!r} but sent no terminal",
                                 details={"runtime": runtime})
        if process.console_size is not None:
            # The runtime sizes it too, but only once the process may already be running.
            set_console_size(master, process.console_size.cols, process.console_size.rows)
        return master
    except BaseException:
        if master is not None:
            os.close(master)
        raise
