"""Running the image tools (mmdebstrap, umoci, skopeo, chroot) as subprocesses.

Everything in ``qbox.agent.images`` that starts a process goes through a
``CommandRunner``, so unit tests inject a fake and never need root or the
tools. The real runner is asyncio-based: the agent's event loop keeps serving
while an image builds or unpacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from qbox.core.errors import InternalError

# Enough context for an error message without keeping a chatty tool's whole log.
OUTPUT_TAIL_LINES = 40

# The exit status a shell gives a command it cannot find; the runner reports a
# missing tool the same way so callers have a single failure path.
EXIT_NOT_FOUND = 127

OutputCallback = Callable[[str], None]

_LOGRUS_MSG_RE = re.compile(r'level=\w+ msg="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    # The last lines the tool printed (stdout and stderr interleaved).
    output_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def message(self, lines: int = 8) -> str:
        """The end of the tool's output for an error message, skopeo's logrus framing taken off."""
        out = []
        for line in self.output_tail.splitlines()[-lines:]:
            match = _LOGRUS_MSG_RE.search(line)
            out.append(match.group(1).replace('\\"', '"') if match else line)
        return " | ".join(out) or f"exit status {self.returncode}"


class CommandRunner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion; ``on_output`` gets each printed line.

        ``env`` adds to (never replaces) the agent's environment.
        """
        ...


async def run_umoci(runner: CommandRunner, args: Sequence[str]) -> None:
    """``umoci ARGS`` that must succeed: a failure is an internal error naming the subcommand."""
    result = await runner.run(["umoci", *args])
    if not result.ok:
        raise InternalError(f"umoci {args[0]} failed: {result.message()}")


class SubprocessRunner:
    """Runs commands with ``asyncio.create_subprocess_exec`` (never a shell)."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        on_output: OutputCallback | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        if not argv:
            raise ValueError("empty command")
        full_env = {**os.environ, **env} if env else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full_env,
                # Its own process group, so a cancelled build can kill the
                # tool's children (apt, dpkg, gzip…) and not only the tool.
                start_new_session=True,
            )
        except FileNotFoundError:
            return CommandResult(EXIT_NOT_FOUND, f"{argv[0]}: command not found")

        tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)

        def emit(line: str) -> None:
            tail.append(line)
            if on_output is not None:
                on_output(line)

        assert proc.stdout is not None and proc.stderr is not None
        try:
            await asyncio.gather(_pump(proc.stdout, emit), _pump(proc.stderr, emit))
            returncode = await proc.wait()
        except BaseException:
            # Cancelled (or the pumps failed): never leave the tool running.
            _kill_group(proc)
            await proc.wait()
            raise
        return CommandResult(returncode, "\n".join(tail))


async def _pump(stream: asyncio.StreamReader, emit: Callable[[str], None]) -> None:
    # Read chunks rather than readline(): a tool printing a very long line
    # (a progress bar without newlines) must not raise LimitOverrunError.
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            _emit_line(raw, emit)
        if len(pending) > 65536:
            _emit_line(pending, emit)
            pending = b""
    if pending:
        _emit_line(pending, emit)


def _emit_line(raw: bytes, emit: Callable[[str], None]) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip("\r")
    if line.strip():
        emit(line)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
