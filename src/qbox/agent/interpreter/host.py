"""The agent's end of one sandbox's kernel host (docs/kernel-host-protocol.md).

The host is a process in the sandbox speaking JSON lines on its stdin and
stdout. ``KernelHost`` writes requests, reads answers in one task and routes
them by ``id`` to the request that waits for them; it keeps the tail of the
host's stderr (its log) for error messages. Everything the host prints is
untrusted: oversized, non-JSON or unknown lines are logged and dropped.

When the host's stdout ends (it exited, or the sandbox died) every pending
request gets ``HostGone``; the host is then ``alive == False`` for good and
the owner starts a new one on the next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal as signals
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qbox.agent.runtime.base import ProcessHandle

log = logging.getLogger("qbox.agent.interpreter")

MAX_LINE_BYTES = 64 * 1024 * 1024
STDERR_TAIL_BYTES = 16 * 1024
_READ_CHUNK = 256 * 1024
# Closing stdin asks the host to shut its kernels down; after this it is killed.
CLOSE_GRACE_SECONDS = 5.0

Spawn = Callable[[], Awaitable[ProcessHandle]]
FINAL_EVENTS = frozenset({"ok", "fail", "done"})


class HostGone(Exception):
    """The kernel host exited (or was never reachable): no answer will come."""


class HostRequestFailed(Exception):
    """The host answered ``fail``: ``code`` is its snake_case reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Pending:
    queue: asyncio.Queue[dict[str, Any] | HostGone] = field(default_factory=asyncio.Queue)
    request_id: int = 0
    # The reader of the queue went away (a client that disconnected): events
    # are dropped, and only the final answer still reaches ``on_final``.
    detached: bool = False
    on_final: Callable[[dict[str, Any] | HostGone], None] | None = None


def split_lines(buffer: bytearray, chunk: bytes, *, discarding: bool,
                limit: int = MAX_LINE_BYTES) -> tuple[list[bytes], bool]:
    """Append ``chunk`` and take the complete lines out of ``buffer``.

    A line longer than ``limit`` is dropped whole: ``discarding`` is True
    while the rest of such a line is still coming in.
    """
    lines: list[bytes] = []
    buffer += chunk
    start = 0
    while (end := buffer.find(b"\n", start)) >= 0:
        if not discarding:
            lines.append(bytes(buffer[start:end]))
        else:
            log.warning("kernel host: dropped a line over %d bytes", limit)
        discarding = False
        start = end + 1
    del buffer[:start]
    if len(buffer) > limit:
        buffer.clear()
        discarding = True
    return lines, discarding


class KernelHost:
    """One running kernel host process and the requests in flight to it."""

    def __init__(self, handle: ProcessHandle, *, name: str = "") -> None:
        self._handle = handle
        self._name = name
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._write_lock = asyncio.Lock()
        self._stderr = bytearray()
        self._gone: HostGone | None = None
        self.ready: asyncio.Future[list[dict[str, Any]]] = (
            asyncio.get_running_loop().create_future())
        self.exited = asyncio.Event()
        self._reader = asyncio.create_task(self._read_stdout())
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, spawn: Spawn, *, name: str = "") -> KernelHost:
        return cls(await spawn(), name=name)

    @property
    def alive(self) -> bool:
        return self._gone is None

    @property
    def stderr_tail(self) -> str:
        return self._stderr.decode(errors="replace")

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def queued_count(self) -> int:
        """Events received and not read yet (by requests still pending)."""
        return sum(entry.queue.qsize() for entry in self._pending.values())

    # --- reading -----------------------------------------------------------------

    async def _read_stdout(self) -> None:
        buffer = bytearray()
        discarding = False
        try:
            while chunk := await self._handle.stdout.read(_READ_CHUNK):
                lines, discarding = split_lines(buffer, chunk, discarding=discarding)
                for line in lines:
                    self._dispatch(line)
        except Exception:  # noqa: BLE001 - any read failure is the host's end
            log.warning("%s: reading the kernel host failed", self._name, exc_info=True)
        finally:
            await self._ended()

    async def _read_stderr(self) -> None:
        with contextlib.suppress(Exception):
            while chunk := await self._handle.stderr.read(_READ_CHUNK):
                self._stderr += chunk
                if len(self._stderr) > STDERR_TAIL_BYTES:
                    del self._stderr[:len(self._stderr) - STDERR_TAIL_BYTES]

    async def _ended(self) -> None:
        # The stderr tail explains the exit: let it drain (it ends with the process).
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._stderr_reader), 1.0)
        tail = self.stderr_tail.strip().splitlines()[-5:]
        reason = "the kernel host exited" + (": " + " | ".join(tail) if tail else "")
        self._gone = HostGone(reason)
        if not self.ready.done():
            self.ready.set_exception(self._gone)
            self.ready.exception()  # retrieved: nobody may be waiting for it
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            self._deliver(entry, self._gone)
        self.exited.set()
        log.info("%s: %s", self._name, reason)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("%s: kernel host printed a non-JSON line", self._name)
            return
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            log.warning("%s: kernel host printed an unknown shape", self._name)
            return
        if message["event"] == "ready" and "id" not in message:
            kernels = message.get("kernels")
            if not self.ready.done():
                self.ready.set_result(kernels if isinstance(kernels, list) else [])
            return
        request_id = message.get("id")
        entry = self._pending.get(request_id) if isinstance(request_id, int) else None
        if entry is None or not isinstance(request_id, int):
            log.debug("%s: an answer to no pending request: %.200r", self._name, message)
            return
        if message["event"] in FINAL_EVENTS:
            del self._pending[request_id]
        self._deliver(entry, message)

    @staticmethod
    def _deliver(entry: _Pending, message: dict[str, Any] | HostGone) -> None:
        final = isinstance(message, HostGone) or message["event"] in FINAL_EVENTS
        if final and entry.on_final is not None:
            try:
                entry.on_final(message)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the reader
                log.exception("kernel host: a final-answer callback failed")
        if not entry.detached:
            entry.queue.put_nowait(message)

    # --- requests ----------------------------------------------------------------

    async def _send(self, op: str, fields: dict[str, Any], entry: _Pending) -> int:
        if self._gone is not None:
            raise self._gone
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "op": op, **fields}, ensure_ascii=False) + "\n"
        self._pending[request_id] = entry
        entry.request_id = request_id
        stdin = self._handle.stdin
        try:
            if stdin is None:
                raise ConnectionResetError("the kernel host has no stdin")
            async with self._write_lock:
                stdin.write(line.encode())
                await stdin.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            self._pending.pop(request_id, None)
            raise self._gone or HostGone(f"the kernel host is not reachable: {exc}") from exc
        return request_id

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its ``ok`` answer; ``fail`` raises ``HostRequestFailed``,
        the host's exit ``HostGone``."""
        entry = _Pending()
        await self._send(op, fields, entry)
        try:
            while True:
                message = await entry.queue.get()
                if isinstance(message, HostGone):
                    raise message
                if message["event"] == "fail":
                    raise HostRequestFailed(str(message.get("code") or "failed"),
                                            str(message.get("message") or ""))
                if message["event"] in FINAL_EVENTS:
                    return message
        finally:
            # Cancelled while waiting: the answer, when it comes, has nowhere to go.
            entry.detached = True

    async def stream(self, op: str, *,
                     on_final: Callable[[dict[str, Any] | HostGone], None] | None = None,
                     **fields: Any) -> HostStream:
        """Send one request; the returned stream yields its events up to and including the
        final answer (or ``HostGone``). ``on_final`` sees the final answer even when nobody
        iterates any more. The request is on its way when this returns. A stream left
        before its final answer (closed, or never read and cancelled) is cancelled at the
        host: an execution's kernel is interrupted."""
        entry = _Pending(on_final=on_final)
        await self._send(op, fields, entry)
        return HostStream(self, entry)

    def cancel(self, request_id: int) -> bool:
        """Ask the host to cancel a pending request (``cancel`` in the protocol; its answer
        is not waited for). False when there is nothing to cancel."""
        if self._gone is not None or request_id not in self._pending:
            return False
        stdin = self._handle.stdin
        line = json.dumps({"id": next(self._ids), "op": "cancel", "request": request_id}) + "\n"
        try:
            if stdin is None:
                return False
            # One write of a whole line: it cannot interleave with another (only drains wait).
            stdin.write(line.encode())
        except (ConnectionError, OSError, RuntimeError):
            return False
        return True

    # --- shutdown ----------------------------------------------------------------

    async def close(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Close stdin (the host then shuts its kernels down and exits), kill what is left
        after ``grace`` seconds, and stop reading."""
        stdin = self._handle.stdin
        if stdin is not None:
            with contextlib.suppress(Exception):
                stdin.close()
        try:
            await asyncio.wait_for(self._handle.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await self._handle.signal_tree(signals.SIGKILL)
        except Exception:  # noqa: BLE001 - the sandbox (and the host with it) may be gone
            log.debug("%s: waiting for the kernel host", self._name, exc_info=True)
        with contextlib.suppress(Exception):
            await self._handle.signal_tree(signals.SIGKILL)  # kernels that outlived the host
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self._reader.cancel()
            self._stderr_reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            if self._gone is None:
                await self._ended()


class HostStream:
    """The events of one streamed request, and its cancellation (see ``KernelHost.stream``)."""

    def __init__(self, host: KernelHost, entry: _Pending) -> None:
        self._host = host
        self._entry = entry
        self._ended = False
        self._cancelled = False
        self._events = self._read()

    @property
    def request_id(self) -> int:
        return self._entry.request_id

    def __aiter__(self) -> AsyncIterator[dict[str, Any] | HostGone]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()
        self.cancel()  # also when it was never read

    def cancel(self) -> None:
        """Leave the request: nothing more is queued for it, and unless its final answer came
        the host is asked to cancel it (once)."""
        entry = self._entry
        entry.detached = True
        while not entry.queue.empty():  # what is left is never read: free it now
            entry.queue.get_nowait()
        if not self._ended and not self._cancelled:
            self._cancelled = True
            self._host.cancel(entry.request_id)

    async def _read(self) -> AsyncGenerator[dict[str, Any] | HostGone, None]:
        try:
            while True:
                message = await self._entry.queue.get()
                if isinstance(message, HostGone) or message["event"] in FINAL_EVENTS:
                    self._ended = True
                yield message
                if self._ended:
                    return
        finally:
            self.cancel()
