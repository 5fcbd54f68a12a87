"""Command (process) operations, written once for sync and async (see ``_steps``).

Every command starts in the background on the server (``POST …/commands``);
a foreground run then polls ``GET …/commands/{pid}`` — 50 ms, growing ×1.5
up to 400 ms — until the process is gone, and reads the cumulative output
from ``GET …/commands/{pid}/logs``. Timeouts are enforced here, client-side:
the process is killed with signal 9 and ``CommandTimeoutError`` raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qbox.core.errors import (
    CommandExitError,
    CommandTimeoutError,
    ConflictError,
    NotFoundError,
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
from qbox.sdk._steps import Now, Op, Sleep

POLL_INITIAL = 0.05
POLL_FACTOR = 1.5
POLL_MAX = 0.4
SHELL = "/bin/sh"
SIGTERM = 15
SIGKILL = 9

OutputCallback = Callable[[str], object]


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


def list_processes(api: Api, sandbox_id: str) -> Op[list[ProcessInfo]]:
    rows = as_list((yield from api.get(_path(sandbox_id))), "the process list")
    return [ProcessInfo.from_wire(row) for row in rows]


@dataclass
class OutputCursor:
    """How much of a command's cumulative output has been handed out, and the poll cadence."""

    stdout: str = ""
    stderr: str = ""
    done: bool = False
    exit_code: int = 0
    delay: float = POLL_INITIAL
    rounds: int = 0
    disconnected: bool = False

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


def poll_output(api: Api, sandbox_id: str, pid: int, cursor: OutputCursor) -> Op[list[CommandOutput]]:
    """One round: new output, then status; once the process is gone, the last output."""
    chunks = cursor.advance((yield from logs(api, sandbox_id, pid)))
    current = yield from status(api, sandbox_id, pid)
    if not current.alive:
        chunks += cursor.advance((yield from logs(api, sandbox_id, pid)))
        cursor.done = True
        cursor.exit_code = current.exit_code
    return chunks


def next_output(api: Api, sandbox_id: str, pid: int, cursor: OutputCursor) -> Op[list[CommandOutput]]:
    """The next round of output for iteration, pausing between rounds."""
    if cursor.rounds:
        yield Sleep(cursor.back_off())
    cursor.rounds += 1
    return (yield from poll_output(api, sandbox_id, pid, cursor))


def _finished(
    api: Api,
    sandbox_id: str,
    pid: int,
    cursor: OutputCursor,
    on_stdout: OutputCallback | None,
    on_stderr: OutputCallback | None,
) -> Op[CommandResult | None]:
    if on_stdout is None and on_stderr is None:
        current = yield from status(api, sandbox_id, pid)
        if current.alive:
            return None
        final = yield from logs(api, sandbox_id, pid)
        return CommandResult(current.exit_code, final.stdout, final.stderr)
    for chunk in (yield from poll_output(api, sandbox_id, pid, cursor)):
        callback = on_stdout if chunk.stream == "stdout" else on_stderr
        if callback is not None:
            callback(chunk.text)
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
    started: float = yield Now()
    deadline = None if timeout is None else started + timeout
    cursor = OutputCursor()
    while True:
        result = yield from _finished(api, sandbox_id, pid, cursor, on_stdout, on_stderr)
        if result is not None:
            break
        delay = cursor.back_off()
        if deadline is not None:
            now: float = yield Now()
            if now >= deadline:
                try:
                    yield from kill(api, sandbox_id, pid, SIGKILL)
                except ConflictError:
                    pass  # the sandbox stopped meanwhile; the timeout is still the news
                raise CommandTimeoutError(
                    f"command (pid {pid}) did not finish within {timeout:g}s and was killed",
                    details={"pid": pid, "timeoutSeconds": timeout},
                )
            delay = min(delay, deadline - now)
        yield Sleep(delay)
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
