"""``sandbox.commands``: run processes in a sandbox (blocking API)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, overload

from qbox.sdk import _command_ops as ops
from qbox.sdk._command_ops import OutputCallback, OutputCursor
from qbox.sdk._models import CommandLogs, CommandOutput, CommandResult, CommandStatus, ProcessInfo
from qbox.sdk._transport import Connection


class CommandHandle:
    """A started process. Iterate it for output chunks; ``wait()`` for the result."""

    def __init__(
        self,
        connection: Connection,
        sandbox_id: str,
        pid: int,
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id
        self._pid = pid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._cursor = OutputCursor()

    @property
    def pid(self) -> int:
        return self._pid

    def wait(
        self,
        timeout: float | None = None,
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult:
        """Block until the process exits; on ``timeout`` kill it (signal 9) and raise."""
        return self._conn.run(
            ops.wait(
                self._conn.api,
                self._sandbox_id,
                self._pid,
                timeout=timeout,
                on_stdout=on_stdout or self._on_stdout,
                on_stderr=on_stderr or self._on_stderr,
                raise_on_error=raise_on_error,
            )
        )

    def status(self) -> CommandStatus:
        return self._conn.run(ops.status(self._conn.api, self._sandbox_id, self._pid))

    def logs(self) -> CommandLogs:
        """Everything the process wrote so far."""
        return self._conn.run(ops.logs(self._conn.api, self._sandbox_id, self._pid))

    def kill(self, signal: int = ops.SIGTERM) -> bool:
        """Signal the process and everything it started (what is left after a grace gets SIGKILL)."""
        return self._conn.run(ops.kill(self._conn.api, self._sandbox_id, self._pid, signal))

    def send_stdin(self, data: str) -> None:
        """Write to the process's stdin (it must have been started with ``stdin=True``)."""
        self._conn.run(ops.send_stdin(self._conn.api, self._sandbox_id, self._pid, data))

    def close_stdin(self) -> None:
        """Close the process's stdin: it reads end-of-file."""
        self._conn.run(ops.send_stdin(self._conn.api, self._sandbox_id, self._pid, "", close=True))

    def disconnect(self) -> None:
        """Stop iterating; the process keeps running."""
        self._cursor.disconnected = True

    def __iter__(self) -> Iterator[CommandOutput]:
        try:
            while not self._cursor.finished:
                yield from self._conn.run(ops.next_output(self._conn.api, self._sandbox_id, self._pid, self._cursor))
        finally:
            self._conn.run(ops.stop_output(self._cursor))

    def __repr__(self) -> str:
        return f"CommandHandle(sandbox_id={self._sandbox_id!r}, pid={self._pid})"


class Commands:
    """Processes of one sandbox (``sandbox.commands``)."""

    def __init__(self, connection: Connection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult | CommandHandle:
        """Run a shell command line (``/bin/sh -c cmd``).

        Foreground: wait for it and return its result (non-zero exit raises
        ``CommandExitError`` unless ``raise_on_error=False``; past ``timeout``
        seconds it is killed and ``CommandTimeoutError`` raised). With
        ``background=True`` return a ``CommandHandle`` at once.
        """
        return self._launch(
            ops.shell_argv(cmd),
            background,
            cwd,
            envs,
            user,
            stdin,
            timeout,
            on_stdout,
            on_stderr,
            raise_on_error,
        )

    @overload
    def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: Literal[False] = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult: ...

    @overload
    def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: Literal[True],
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandHandle: ...

    def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult | CommandHandle:
        """Like ``run`` but with an argv list, executed without a shell."""
        return self._launch(
            list(argv),
            background,
            cwd,
            envs,
            user,
            stdin,
            timeout,
            on_stdout,
            on_stderr,
            raise_on_error,
        )

    def _launch(
        self,
        argv: builtins.list[str],
        background: bool,
        cwd: str | None,
        envs: Mapping[str, str] | None,
        user: str | None,
        stdin: bool,
        timeout: float | None,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        raise_on_error: bool,
    ) -> CommandResult | CommandHandle:
        api = self._conn.api
        if stdin and not background:
            raise ValueError("stdin=True is for background commands: write with handle.send_stdin()")
        if background:
            pid = self._conn.run(
                ops.start(api, self._sandbox_id, argv, cwd=cwd, envs=envs, user=user, stdin=stdin)
            )
            return CommandHandle(self._conn, self._sandbox_id, pid, on_stdout=on_stdout, on_stderr=on_stderr)
        return self._conn.run(
            ops.run(
                api,
                self._sandbox_id,
                argv,
                cwd=cwd,
                envs=envs,
                user=user,
                timeout=timeout,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                raise_on_error=raise_on_error,
            )
        )

    def list(self) -> builtins.list[ProcessInfo]:
        """Processes started in this sandbox, running or exited."""
        return self._conn.run(ops.list_processes(self._conn.api, self._sandbox_id))

    def kill(self, pid: int, signal: int = ops.SIGTERM) -> bool:
        """Signal a process; False when there is no such process."""
        return self._conn.run(ops.kill(self._conn.api, self._sandbox_id, pid, signal))

    def connect(self, pid: int) -> CommandHandle:
        """A handle to a process started earlier (no request is made)."""
        return CommandHandle(self._conn, self._sandbox_id, pid)
