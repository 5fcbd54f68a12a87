"""``sandbox.commands`` for ``AsyncSandbox``: the same surface as ``_commands``, awaited."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal, overload

from qbox.sdk import _command_ops as ops
from qbox.sdk._command_ops import AsyncOutputCallback, OutputCursor
from qbox.sdk._models import CommandLogs, CommandOutput, CommandResult, CommandStatus, ProcessInfo
from qbox.sdk._transport import AsyncConnection


class AsyncCommandHandle:
    """A started process: ``async for`` its output chunks, or ``await wait()`` for the result."""

    def __init__(
        self,
        connection: AsyncConnection,
        sandbox_id: str,
        pid: int,
        *,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
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

    async def wait(
        self,
        timeout: float | None = None,
        *,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult:
        """Block until the process exits; on ``timeout`` kill it (signal 9) and raise."""
        return await self._conn.run(
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

    async def status(self) -> CommandStatus:
        return await self._conn.run(ops.status(self._conn.api, self._sandbox_id, self._pid))

    async def logs(self) -> CommandLogs:
        """Everything the process wrote so far."""
        return await self._conn.run(ops.logs(self._conn.api, self._sandbox_id, self._pid))

    async def kill(self, signal: int = ops.SIGTERM) -> bool:
        """Signal the process and everything it started (what is left after a grace gets SIGKILL)."""
        return await self._conn.run(ops.kill(self._conn.api, self._sandbox_id, self._pid, signal))

    async def send_stdin(self, data: str) -> None:
        """Write to the process's stdin (it must have been started with ``stdin=True``)."""
        await self._conn.run(ops.send_stdin(self._conn.api, self._sandbox_id, self._pid, data))

    async def close_stdin(self) -> None:
        """Close the process's stdin: it reads end-of-file."""
        await self._conn.run(ops.send_stdin(self._conn.api, self._sandbox_id, self._pid, "", close=True))

    def disconnect(self) -> None:
        """Stop iterating; the process keeps running."""
        self._cursor.disconnected = True

    async def __aiter__(self) -> AsyncIterator[CommandOutput]:
        try:
            while not self._cursor.finished:
                chunks = await self._conn.run(
                    ops.next_output(self._conn.api, self._sandbox_id, self._pid, self._cursor)
                )
                for chunk in chunks:
                    yield chunk
        finally:
            await self._conn.run(ops.stop_output(self._cursor))

    def __repr__(self) -> str:
        return f"AsyncCommandHandle(sandbox_id={self._sandbox_id!r}, pid={self._pid})"


class AsyncCommands:
    """Processes of one sandbox (``sandbox.commands``)."""

    def __init__(self, connection: AsyncConnection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult | AsyncCommandHandle:
        """Run a shell command line (``/bin/sh -c cmd``).

        Foreground: wait for it and return its result (non-zero exit raises
        ``CommandExitError`` unless ``raise_on_error=False``; past ``timeout``
        seconds it is killed and ``CommandTimeoutError`` raised). With
        ``background=True`` return a ``CommandHandle`` at once.
        """
        return await self._launch(
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
    async def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: Literal[False] = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult: ...

    @overload
    async def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: Literal[True],
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> AsyncCommandHandle: ...

    async def run_argv(
        self,
        argv: Sequence[str],
        *,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        stdin: bool = False,
        timeout: float | None = 60.0,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        raise_on_error: bool = True,
    ) -> CommandResult | AsyncCommandHandle:
        """Like ``run`` but with an argv list, executed without a shell."""
        return await self._launch(
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

    async def _launch(
        self,
        argv: builtins.list[str],
        background: bool,
        cwd: str | None,
        envs: Mapping[str, str] | None,
        user: str | None,
        stdin: bool,
        timeout: float | None,
        on_stdout: AsyncOutputCallback | None,
        on_stderr: AsyncOutputCallback | None,
        raise_on_error: bool,
    ) -> CommandResult | AsyncCommandHandle:
        api = self._conn.api
        if stdin and not background:
            raise ValueError("stdin=True is for background commands: write with handle.send_stdin()")
        if background:
            pid = await self._conn.run(
                ops.start(api, self._sandbox_id, argv, cwd=cwd, envs=envs, user=user, stdin=stdin)
            )
            return AsyncCommandHandle(self._conn, self._sandbox_id, pid, on_stdout=on_stdout, on_stderr=on_stderr)
        return await self._conn.run(
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

    async def list(self) -> builtins.list[ProcessInfo]:
        """Processes started in this sandbox, running or exited."""
        return await self._conn.run(ops.list_processes(self._conn.api, self._sandbox_id))

    async def kill(self, pid: int, signal: int = ops.SIGTERM) -> bool:
        """Signal a process; False when there is no such process."""
        return await self._conn.run(ops.kill(self._conn.api, self._sandbox_id, pid, signal))

    def connect(self, pid: int) -> AsyncCommandHandle:
        """A handle to a process started earlier (no request is made)."""
        return AsyncCommandHandle(self._conn, self._sandbox_id, pid)
