"""The stdio pipes of a command started in a sandbox.

The runtime (crun) passes its own stdio straight to the command, so the
command writes into these pipes directly; the agent reads the other ends as
asyncio streams. We make the pipes ourselves rather than use asyncio's
``PIPE``: asyncio's ``Process.wait()`` waits for its pipes to close, which
for ``crun exec --detach`` would mean waiting for the command, not crun.
"""

from __future__ import annotations

import asyncio
import os
import subprocess


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
