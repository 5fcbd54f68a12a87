"""The commands of one sandbox: started, watched, queried, followed, fed, signalled.

``/commands`` (start, then poll status and cumulative logs, or follow them)
and ``/exec`` (start, wait, answer — or stream) share this manager. Records
outlive their process — clients poll status until ``alive`` is false and
only then read the logs — and are dropped oldest first beyond a count and an
output budget, so disk use stays bounded however many commands a sandbox runs.
Output is spooled to files in the sandbox's spool directory (``OutputSpool``),
never held in memory; a record's spool is released when the record is
dropped, an /exec's once its answer has been sent, and all of them when the
sandbox ends.

Killing a command signals its whole tree (``ProcessHandle.signal_tree``),
and what is left of it after a grace period gets SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal as signals
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from qbox.agent.output import DEFAULT_CAP_BYTES, OutputSpool
from qbox.agent.runtime.base import ExitStatus, ProcessHandle, ProcessSpec, RuntimeDriver
from qbox.core.errors import ConflictError, ProcessNotFoundError, ValidationError
from qbox.core.timefmt import utcnow
from qbox.protocol.processes import ExitEvent, OutputEvent, StartedEvent

log = logging.getLogger("qbox.agent.processes")

# After a command exits, how long its output may take to drain. A background
# child that inherited stdout keeps the pipe open; we do not wait for it.
DRAIN_GRACE_SECONDS = 0.2
DEFAULT_EXEC_TIMEOUT_SECONDS = 3600.0
# How long a killed command's tree has to end before SIGKILL.
DEFAULT_KILL_GRACE_SECONDS = 5.0
# A write to a command's stdin waits at most this long for the command to read it.
STDIN_DRAIN_SECONDS = 20.0
_READ_CHUNK = 64 * 1024

Event = StartedEvent | OutputEvent | ExitEvent


@dataclass(eq=False)  # by identity: a pid is reused, a record is not
class ProcessRecord:
    pid: int
    command: list[str]
    started_at: datetime
    stdout: OutputSpool
    stderr: OutputSpool
    handle: ProcessHandle
    exit: ExitStatus | None = None
    ended_at: datetime | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # An /exec's process: nobody can ask for its pid later, so no record is kept.
    ephemeral: bool = False
    # The sandbox's OOM-kill count when it started (None: not readable).
    oom_kills_at_start: int | None = None
    oom_killed: bool = False
    # Open when started with ``stdin: true`` and until the client closes it.
    stdin: asyncio.StreamWriter | None = None
    # Whether it was started with a stdin pipe at all (409 vs. "already closed").
    has_stdin: bool = False

    @property
    def alive(self) -> bool:
        return self.exit is None

    @property
    def exit_code(self) -> int:
        return self.exit.exit_code if self.exit else 0

    @property
    def signal(self) -> int:
        return self.exit.signal if self.exit else 0

    def release_output(self) -> None:
        self.stdout.release()
        self.stderr.release()


@dataclass(frozen=True)
class ExecResult:
    """A finished /exec: its record (whose output the caller streams, then releases
    with ``ProcessManager.release``) and whether its timeout ran out."""

    record: ProcessRecord
    timed_out: bool
    release: Callable[[], None]

    @property
    def exit_code(self) -> int:
        return self.record.exit_code

    @property
    def signal(self) -> int:
        return self.record.signal

    @property
    def oom_killed(self) -> bool:
        return self.record.oom_killed


async def _pump(reader: asyncio.StreamReader, spool: OutputSpool) -> None:
    try:
        while chunk := await reader.read(_READ_CHUNK):
            spool.feed(chunk)  # past the cap this drops, but keeps draining the pipe
    finally:
        spool.close()


async def _feed_stdin(writer: asyncio.StreamWriter, text: str) -> None:
    try:
        writer.write(text.encode())
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command exited without reading it all
    finally:
        writer.close()


def killed_by_oom(status: ExitStatus, kills_before: int | None, kills_now: int | None) -> bool:
    """Whether a command that ended with ``status`` was the OOM killer's doing.

    The kernel kills with SIGKILL, and a shell reports its killed child as
    137; the sandbox's OOM counter tells whether the OOM killer struck while
    the command ran. (It cannot tell which process it killed: a command that
    got a SIGKILL from elsewhere while another was OOM-killed is counted too.)
    """
    if kills_before is None or kills_now is None or kills_now <= kills_before:
        return False
    return status.signal == signals.SIGKILL or status.exit_code == 128 + signals.SIGKILL


def validate_signal(signo: int) -> int:
    if not 1 <= signo <= signals.SIGRTMAX:
        raise ValidationError.for_fields({"signal": f"{signo} is not a signal number"})
    return signo


def exit_event(record: ProcessRecord) -> ExitEvent:
    return ExitEvent(exit_code=record.exit_code, signal=record.signal,
                     oom_killed=record.oom_killed)


async def follow(record: ProcessRecord, stdout_offset: int = 0,
                 stderr_offset: int = 0) -> AsyncIterator[OutputEvent | ExitEvent]:
    """Output events from the given character offsets as output arrives, then the exit.

    Ends once the process has ended and its output drained (as far as the
    drain grace goes: a background child holding the pipe does not keep the
    follower waiting).
    """
    offsets = {"stdout": stdout_offset, "stderr": stderr_offset}
    buffers: dict[Literal["stdout", "stderr"], OutputSpool] = {"stdout": record.stdout,
                                                                "stderr": record.stderr}
    while True:
        ended = record.finished.is_set()
        for name, buffer in buffers.items():
            # A chunk at a time: a follower starting at 0 of 16 MiB gets many events.
            for data in buffer.chunks(offsets[name]):
                offsets[name] += len(data)
                yield OutputEvent(type=name, data=data)
        if ended:
            yield exit_event(record)
            return
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(record.finished.wait())]
        waits += [asyncio.ensure_future(buffer.wait_for_more(offsets[name]))
                  for name, buffer in buffers.items() if not buffer.closed]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()


class ProcessManager:
    def __init__(self, runtime: RuntimeDriver, container_id: str, *,
                 max_finished: int = 1000, output_cap_bytes: int = DEFAULT_CAP_BYTES,
                 finished_output_budget: int = 64 * 1024 * 1024,
                 oom_kills: Callable[[], int | None] | None = None,
                 kill_grace: float = DEFAULT_KILL_GRACE_SECONDS,
                 spool_dir: Path | None = None) -> None:
        self._runtime = runtime
        # Where output is spooled (the sandbox's own disk); None: the system's temp dir.
        self._spool_dir = spool_dir
        self._kill_grace = kill_grace
        # The sandbox's OOM-kill counter (cgroups.oom_kills), if it has one.
        self._oom_kills = oom_kills or (lambda: None)
        self._container_id = container_id
        self._max_finished = max_finished
        self._output_cap = output_cap_bytes
        self._finished_budget = finished_output_budget
        self._records: dict[int, ProcessRecord] = {}
        # Finished pids, oldest first, with their output size.
        self._finished: OrderedDict[int, int] = OrderedDict()
        self._finished_bytes = 0
        # Finished /exec records whose answer is still being sent (see ``release``).
        self._held: set[ProcessRecord] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Kills waiting out their grace period (a subset of the tasks).
        self._kills: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self, spec: ProcessSpec, *, stdin: str | None = None,
                    keep_stdin: bool = False, ephemeral: bool = False) -> ProcessRecord:
        """Start a command. ``stdin`` is written to it and closed; ``keep_stdin`` leaves
        the pipe open for ``write_stdin`` instead. Neither: it reads /dev/null."""
        started_at = utcnow()
        oom_kills = self._oom_kills()
        stdout = OutputSpool(self._spool_dir, self._output_cap)
        stderr = OutputSpool(self._spool_dir, self._output_cap)
        try:
            handle = await self._runtime.exec(self._container_id, spec,
                                              stdin=stdin is not None or keep_stdin)
        except BaseException:
            stdout.release()
            stderr.release()
            raise
        record = ProcessRecord(handle.pid, list(spec.args), started_at, stdout, stderr,
                               handle, ephemeral=ephemeral, oom_kills_at_start=oom_kills)
        if keep_stdin:
            record.stdin, record.has_stdin = handle.stdin, True
        # pids are reused inside the sandbox once they wrap: the new process wins.
        self._forget(handle.pid)
        self._records[handle.pid] = record
        self._spawn(self._supervise(record, None if keep_stdin else stdin))
        return record

    async def _supervise(self, record: ProcessRecord, stdin: str | None) -> None:
        handle = record.handle
        pumps = [self._spawn(_pump(handle.stdout, record.stdout)),
                 self._spawn(_pump(handle.stderr, record.stderr))]
        if handle.stdin is not None and not record.has_stdin:
            self._spawn(_feed_stdin(handle.stdin, stdin or ""))
        try:
            status = await handle.wait()
        except Exception:  # noqa: BLE001 - a record must always end
            log.exception("waiting for pid %s in %s failed", record.pid, self._container_id)
            status = ExitStatus(-1)
        await asyncio.wait(pumps, timeout=DRAIN_GRACE_SECONDS)
        record.oom_killed = killed_by_oom(status, record.oom_kills_at_start, self._oom_kills())
        if record.stdin is not None:
            record.stdin.close()
            record.stdin = None
        record.exit = status
        record.ended_at = utcnow()
        record.finished.set()
        if self._records.get(record.pid) is not record:
            return
        if record.ephemeral:
            self._records.pop(record.pid, None)
            if not record.stdout.released:
                self._held.add(record)  # until its answer is sent
        else:
            size = record.stdout.bytes_kept + record.stderr.bytes_kept
            self._finished[record.pid] = size
            self._finished_bytes += size
            self._evict()

    def _evict(self) -> None:
        while self._finished and (len(self._finished) > self._max_finished
                                  or self._finished_bytes > self._finished_budget):
            pid = next(iter(self._finished))
            self._forget(pid)

    def _forget(self, pid: int) -> None:
        size = self._finished.pop(pid, None)
        if size is not None:
            self._finished_bytes -= size
        record = self._records.pop(pid, None)
        if record is not None and not record.ephemeral:
            record.release_output()

    def release(self, record: ProcessRecord) -> None:
        """An /exec's output has been sent (or nobody wants it any more): give its
        spool's space back. Safe while the command still runs (its output is dropped)."""
        self._held.discard(record)
        record.release_output()

    def get(self, pid: int) -> ProcessRecord:
        record = self._records.get(pid)
        if record is None:
            raise ProcessNotFoundError(f"no process {pid} in sandbox {self._container_id}",
                                       details={"pid": pid})
        return record

    def list(self) -> list[ProcessRecord]:
        return sorted(self._records.values(), key=lambda r: r.started_at)

    def kill(self, pid: int, signo: int = signals.SIGTERM) -> None:
        """Signal the command's tree — also when the command itself has exited, for
        what it left running — and SIGKILL what is left of it after the grace
        period. Returns at once."""
        record = self.get(pid)
        validate_signal(signo)
        task = self._spawn(self._kill_tree(record, signo))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    async def _kill_tree(self, record: ProcessRecord, signo: int) -> None:
        try:
            signalled = await record.handle.signal_tree(signo)
            if signalled and signo != signals.SIGKILL:
                await asyncio.sleep(self._kill_grace)  # the grace itself, not a poll
                await record.handle.signal_tree(signals.SIGKILL)
        except Exception:  # noqa: BLE001 - a background kill must not go unnoticed, nor crash
            log.exception("killing pid %s in %s failed", record.pid, self._container_id)

    async def write_stdin(self, pid: int, data: str, *, close: bool = False) -> None:
        record = self.get(pid)
        if not record.has_stdin:
            raise ConflictError(f"process {pid} was started without stdin",
                                details={"pid": pid})
        writer = record.stdin
        if writer is None or not record.alive:
            raise ConflictError(f"the stdin of process {pid} is closed (or it has ended)",
                                details={"pid": pid, "alive": record.alive})
        try:
            if data:
                writer.write(data.encode())
                await asyncio.wait_for(writer.drain(), STDIN_DRAIN_SECONDS)
        except (BrokenPipeError, ConnectionResetError):
            raise ConflictError(f"process {pid} closed its stdin",
                                details={"pid": pid}) from None
        except TimeoutError:
            raise ConflictError(f"process {pid} is not reading its stdin",
                                details={"pid": pid}) from None
        finally:
            if close and record.stdin is writer:
                record.stdin = None
                writer.close()

    async def run(self, spec: ProcessSpec, *, stdin: str | None = None,
                  timeout: float | None = None) -> ExecResult:
        """Start, wait (at most ``timeout`` seconds, then SIGKILL), and return the finished
        record; the caller sends its output, then calls ``release``."""
        record = await self.start(spec, stdin=stdin, ephemeral=True)
        timed_out = False
        try:
            await asyncio.wait_for(record.finished.wait(),
                                   timeout or DEFAULT_EXEC_TIMEOUT_SECONDS)
        except TimeoutError:
            timed_out = True
            await record.handle.signal_tree(signals.SIGKILL)
            await record.finished.wait()
        except asyncio.CancelledError:
            # The caller went away (HTTP client disconnected): do not leave it running.
            self._spawn(self._kill_tree(record, signals.SIGKILL))
            self.release(record)
            raise
        return ExecResult(record, timed_out, functools.partial(self.release, record))

    async def stream(self, record: ProcessRecord, *,
                     timeout: float | None = None) -> AsyncIterator[Event]:
        """An /exec as events: started, output, and the exit (with ``timedOut``). Past
        ``timeout`` seconds, or when the consumer goes away, its tree is killed."""
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            self._spawn(self._kill_tree(record, signals.SIGKILL))

        timer = asyncio.get_running_loop().call_later(
            timeout or DEFAULT_EXEC_TIMEOUT_SECONDS, expire)
        try:
            yield StartedEvent(pid=record.pid)
            async for event in follow(record):
                if isinstance(event, ExitEvent):
                    event.timed_out = timed_out
                yield event
        finally:
            timer.cancel()
            if record.alive:
                self._spawn(self._kill_tree(record, signals.SIGKILL))
            self.release(record)

    async def close(self) -> None:
        """Stop watching (after the sandbox was deleted, its processes are gone)."""
        holding = []
        for record in self._records.values():
            if record.alive:
                record.handle.send_signal(signals.SIGKILL)
            if not (record.stdout.closed and record.stderr.closed):
                holding.append(record)  # something still holds its pipes: its tree goes too
            if record.stdin is not None:
                record.stdin.close()
                record.stdin = None
        with contextlib.suppress(Exception):
            await asyncio.gather(*(r.handle.signal_tree(signals.SIGKILL) for r in holding),
                                 return_exceptions=True)
        for task in self._kills:
            task.cancel()  # a grace period has nothing left to wait for
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        for record in [*self._records.values(), *self._held]:
            if not record.finished.is_set():
                # Its watcher was cancelled: end the record anyway, so no follower waits on.
                record.exit = record.exit or ExitStatus.killed_by(signals.SIGKILL)
                record.finished.set()
            record.release_output()
        self._records.clear()
        self._held.clear()
        self._finished.clear()
        self._finished_bytes = 0
