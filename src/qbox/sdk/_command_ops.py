"""Command (process) operations, written once for sync and async (see ``_steps``).

Every command starts in the background on the server (``POST …/commands``);
a foreground run then polls ``GET …/commands/{pid}`` — 50 ms, growing ×1.5
up to 400 ms — until the process is gone, and reads the cumulative output
from ``GET …/commands/{pid}/logs``. Timeouts are enforced here, client-side:
the process is killed with signal 9 and ``CommandTimeoutError`` raised.

Output as it comes (handle iteration, ``on_stdout``/``on_stderr``) is read
from the qbox follow stream (``…/logs?follow=true``, NDJSON) where the
server offers it, and polled where it does not, or once a stream breaks off
— from where the stream left off, so nothing is handed out twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qbox.core.errors import (
    CommandExitError,
    CommandTimeoutError,
    ConflictError,
    NotFoundError,
    RequestTimeoutError,
    TransportError,
    ValidationError,
)
from qbox.sdk._api import Api
from qbox.sdk._models import (
    CommandLogs,
    CommandOutput,
    CommandResult,
    CommandStatus,
    ProcessInfo,
    as_list,
    as_object,
    bad_response,
)
from qbox.sdk._sandbox_ops import sandbox_path
from qbox.sdk._steps import AsyncCallback, Close, Deliver, Now, Op, Read, Sleep

POLL_INITIAL = 0.05
POLL_FACTOR = 1.5
POLL_MAX = 0.4
SHELL = "/bin/sh"
SIGTERM = 15
SIGKILL = 9
NDJSON = "application/x-ndjson"

OutputCallback = Callable[[str], object]
AsyncOutputCallback = AsyncCallback[str]


def shell_argv(command: str) -> list[str]:
    return [SHELL, "-c", command]


def _path(sandbox_id: str, pid: int | None = None, suffix: str = "") -> str:
    tail = "" if pid is None else f"/{pid}"
    return sandbox_path(sandbox_id, f"/commands{tail}{suffix}")


def start(
    api: Api,
    sandbox_id: str,
    argv: Sequence[str],
    *,
    cwd: str | None,
    envs: Mapping[str, str] | None,
    user: str | None,
    stdin: bool = False,
) -> Op[int]:
    if not argv:
        raise ValueError("a command needs at least a program name")
    body: dict[str, Any] = {"cmd": str(argv[0]), "args": [str(a) for a in argv[1:]]}
    if cwd:
        body["cwd"] = cwd
    if envs:
        body["env"] = {str(k): str(v) for k, v in envs.items()}
    if user:
        body["user"] = user
    if stdin:
        body["stdin"] = True  # qbox extension: only sent when asked for
    data = as_object((yield from api.post(_path(sandbox_id), json=body)), "a started command")
    try:
        return int(data["pid"])
    except (KeyError, TypeError, ValueError):
        raise bad_response(f"a started command without a usable pid: {data!r}") from None


def status(api: Api, sandbox_id: str, pid: int) -> Op[CommandStatus]:
    return CommandStatus.from_wire((yield from api.get(_path(sandbox_id, pid))), pid)


def logs(api: Api, sandbox_id: str, pid: int) -> Op[CommandLogs]:
    return CommandLogs.from_wire((yield from api.get(_path(sandbox_id, pid, "/logs"))))


def kill(api: Api, sandbox_id: str, pid: int, signal: int = SIGTERM) -> Op[bool]:
    """True when the signal was sent; False when there was no such process."""
    try:
        yield from api.delete(_path(sandbox_id, pid), params={"signal": int(signal)})
    except NotFoundError:
        return False
    return True


def send_stdin(api: Api, sandbox_id: str, pid: int, data: str, *, close: bool = False) -> Op[None]:
    """Write to the stdin of a command started with ``stdin=True`` (and close it, if asked)."""
    yield from api.post(_path(sandbox_id, pid, "/stdin"), json={"data": data, "close": close})


def list_processes(api: Api, sandbox_id: str) -> Op[list[ProcessInfo]]:
    rows = as_list((yield from api.get(_path(sandbox_id))), "the process list")
    return [ProcessInfo.from_wire(row) for row in rows]


@dataclass
class OutputCursor:
    """How much of a command's cumulative output has been handed out, the open follow
    stream if any, and the poll cadence."""

    stdout: str = ""
    stderr: str = ""
    done: bool = False
    exit_code: int = 0
    delay: float = POLL_INITIAL
    rounds: int = 0
    disconnected: bool = False
    # The follow stream while one is open; ``streaming`` is False once the
    # server turned out not to offer it, or a stream broke off: then poll.
    stream: Any = None
    streaming: bool = True
    pending: bytes = b""

    def take_events(self, chunk: bytes, pid: int) -> list[CommandOutput]:
        """The output in a chunk of the follow stream (NDJSON); its ``exit`` event ends it."""
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        chunks: list[CommandOutput] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = as_object(json.loads(line), "a command output event")
            except ValueError:
                raise bad_response(f"a follow stream line that is not JSON: {line[:200]!r}") from None
            kind = event.get("type")
            if kind in ("stdout", "stderr"):
                data = str(event.get("data") or "")
                if kind == "stdout":
                    self.stdout += data
                else:
                    self.stderr += data
                chunks.append(CommandOutput(kind, data))
            elif kind == "exit":
                self.done = True
                self.exit_code = CommandStatus.from_wire({**event, "alive": False}, pid).exit_code
        return chunks

    def advance(self, current: CommandLogs) -> list[CommandOutput]:
        chunks: list[CommandOutput] = []
        if len(current.stdout) > len(self.stdout):
            chunks.append(CommandOutput("stdout", current.stdout[len(self.stdout) :]))
            self.stdout = current.stdout
        if len(current.stderr) > len(self.stderr):
            chunks.append(CommandOutput("stderr", current.stderr[len(self.stderr) :]))
            self.stderr = current.stderr
        return chunks

    def back_off(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * POLL_FACTOR, POLL_MAX)
        return delay

    @property
    def finished(self) -> bool:
        return self.done or self.disconnected


def poll_output(
    api: Api, sandbox_id: str, pid: int, cursor: OutputCursor, fetched: CommandLogs | None = None
) -> Op[list[CommandOutput]]:
    """One round: new output (unless just ``fetched``), then status; once the process is gone,
    the last output."""
    chunks = cursor.advance(fetched if fetched is not None else (yield from logs(api, sandbox_id, pid)))
    current = yield from status(api, sandbox_id, pid)
    if not current.alive:
        chunks += cursor.advance((yield from logs(api, sandbox_id, pid)))
        cursor.done = True
        cursor.exit_code = current.exit_code
    return chunks


def _open_follow(
    api: Api, sandbox_id: str, pid: int, cursor: OutputCursor, timeout: float | None
) -> Op[CommandLogs | None]:
    """Open the follow stream into ``cursor``. A server without it answers the plain
    cumulative logs, which are returned (a poll's worth), and streaming is off from then on."""
    params: dict[str, str | int] = {
        "follow": "true", "stdoutOffset": len(cursor.stdout), "stderrOffset": len(cursor.stderr)}
    request = api.build("GET", _path(sandbox_id, pid, "/logs"), params=params)
    try:
        response = yield from api.open(replace(request, timeout=timeout))
    except ValidationError:
        cursor.streaming = False  # a server that knows no such parameters
        return None
    if NDJSON in (response.header("content-type") or ""):
        cursor.stream, cursor.pending = response.stream, b""
        return None
    cursor.streaming = False
    body = b""
    while (chunk := (yield from Read(response.stream))) is not None:
        body += chunk
    try:
        return CommandLogs.from_wire(json.loads(body or b"null"))
    except ValueError:
        raise bad_response(f"command logs that are not JSON: {body[:200]!r}") from None


def stop_output(cursor: OutputCursor) -> Op[None]:
    """Close the follow stream, if one is open (iteration given up, or a timeout)."""
    if cursor.stream is not None:
        stream, cursor.stream = cursor.stream, None
        yield from Close(stream)


def follow_output(
    api: Api, sandbox_id: str, pid: int, cursor: OutputCursor, *, timeout: float | None = None
) -> Op[list[CommandOutput]]:
    """The output in the follow stream's next chunk, opening the stream first if needed.

    ``timeout`` bounds each wait for a chunk; past it this returns nothing
    and the next call opens the stream again, from where it stood.
    """
    if cursor.stream is None:
        fetched = yield from _open_follow(api, sandbox_id, pid, cursor, timeout)
        if fetched is not None:
            return (yield from poll_output(api, sandbox_id, pid, cursor, fetched))
        if cursor.stream is None:
            return []
    try:
        chunk = yield from Read(cursor.stream)
    except RequestTimeoutError:
        yield from stop_output(cursor)
        return []
    except TransportError:
        yield from stop_output(cursor)
        cursor.streaming = False  # broken off: poll for the rest
        return []
    if chunk is None:
        cursor.stream = None
        cursor.streaming = cursor.done  # ended without its exit event: poll for the rest
        return []
    chunks = cursor.take_events(chunk, pid)
    if cursor.done:
        yield from stop_output(cursor)
    return chunks


def next_output(api: Api, sandbox_id: str, pid: int, cursor: OutputCursor) -> Op[list[CommandOutput]]:
    """The next output for iteration: from the follow stream, else a poll round (pausing
    between rounds)."""
    if cursor.streaming:
        cursor.rounds += 1
        return (yield from follow_output(api, sandbox_id, pid, cursor))
    if cursor.rounds:
        yield from Sleep(cursor.back_off())
    cursor.rounds += 1
    return (yield from poll_output(api, sandbox_id, pid, cursor))


def _finished(
    api: Api,
    sandbox_id: str,
    pid: int,
    cursor: OutputCursor,
    on_stdout: OutputCallback | None,
    on_stderr: OutputCallback | None,
    deadline: float | None,
) -> Op[CommandResult | None]:
    if on_stdout is None and on_stderr is None:
        current = yield from status(api, sandbox_id, pid)
        if current.alive:
            return None
        final = yield from logs(api, sandbox_id, pid)
        return CommandResult(current.exit_code, final.stdout, final.stderr)
    if cursor.streaming:
        remaining = None if deadline is None else max(deadline - (yield from Now()), 0.01)
        chunks = yield from follow_output(api, sandbox_id, pid, cursor, timeout=remaining)
    else:
        chunks = yield from poll_output(api, sandbox_id, pid, cursor)
    for chunk in chunks:
        callback = on_stdout if chunk.stream == "stdout" else on_stderr
        if callback is not None:
            yield from Deliver(callback, chunk.text)
    if not cursor.done:
        return None
    return CommandResult(cursor.exit_code, cursor.stdout, cursor.stderr)


def _exit_error(pid: int, result: CommandResult) -> CommandExitError:
    message = f"command (pid {pid}) exited with code {result.exit_code}"
    last_line = result.stderr.strip().splitlines()[-1:] if result.stderr.strip() else []
    if last_line:
        message += f": {last_line[0][:200]}"
    return CommandExitError(message, exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def wait(
    api: Api,
    sandbox_id: str,
    pid: int,
    *,
    timeout: float | None,
    on_stdout: OutputCallback | None = None,
    on_stderr: OutputCallback | None = None,
    raise_on_error: bool = True,
) -> Op[CommandResult]:
    started = yield from Now()
    deadline = None if timeout is None else started + timeout
    cursor = OutputCursor()
    while True:
        result = yield from _finished(api, sandbox_id, pid, cursor, on_stdout, on_stderr, deadline)
        if result is not None:
            break
        # A stream waits for output by itself: only polling pauses.
        delay = 0.0 if cursor.stream is not None else cursor.back_off()
        if deadline is not None:
            now = yield from Now()
            if now >= deadline:
                yield from stop_output(cursor)
                try:
                    yield from kill(api, sandbox_id, pid, SIGKILL)
                except ConflictError:
                    pass  # the sandbox stopped meanwhile; the timeout is still the news
                raise CommandTimeoutError(
                    f"command (pid {pid}) did not finish within {timeout:g}s and was killed",
                    details={"pid": pid, "timeoutSeconds": timeout},
                )
            delay = min(delay, deadline - now)
        if delay > 0:
            yield from Sleep(delay)
    if raise_on_error and result.exit_code != 0:
        raise _exit_error(pid, result)
    return result


def run(
    api: Api,
    sandbox_id: str,
    argv: Sequence[str],
    *,
    cwd: str | None,
    envs: Mapping[str, str] | None,
    user: str | None,
    timeout: float | None,
    on_stdout: OutputCallback | None,
    on_stderr: OutputCallback | None,
    raise_on_error: bool,
) -> Op[CommandResult]:
    pid = yield from start(api, sandbox_id, argv, cwd=cwd, envs=envs, user=user)
    return (
        yield from wait(
            api,
            sandbox_id,
            pid,
            timeout=timeout,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            raise_on_error=raise_on_error,
        )
    )
