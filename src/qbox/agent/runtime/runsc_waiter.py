"""What runsc's own processes say, kept from the sandbox's users.

A command under gVisor is watched by a *waiter* (``runsc exec``) that shares
the command's stdout and stderr. When the sandbox dies under it, the waiter
writes its error (``waiting on pid 5: urpc method "containerManager.WaitPID"
failed: EOF``) on the command's stderr and exits 128. These are gVisor's
internals: the agent logs them and users see a plain reason instead
(``describe_end``), never the text. Its exit status, too, is read from its
log (its exit code folds death by signal N into 128+N). ``runsc.py`` uses
these.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

from qbox.agent.runtime.base import ExitStatus

log = logging.getLogger("qbox.agent.runtime")

# "I1127 14:57:27.891544    6098 main.go:222] Exiting with status: 9"
_EXIT_LINE = re.compile(r"^\S+\s+\S+\s+(\d+)\s+\S+\]\s+Exiting with status: (\d+)\s*$",
                        re.MULTILINE)
# "W1206 01:33:41.123456    6098 util.go:64] FATAL ERROR: waiting on pid 5: urpc ..."
_FATAL_LINE = re.compile(r"^\S+\s+\S+\s+(\d+)\s+\S+\]\s+FATAL ERROR: (.*)$", re.MULTILINE)
# The waiter's message is one short line; a longer one is the command's own output.
_MAX_MESSAGE = 4096
_READ_CHUNK = 64 * 1024


def exit_status_from_log(text: str, pid: int) -> ExitStatus | None:
    """The wait status the waiter ``pid`` logged as it exited, if it did."""
    statuses = [int(raw) for logged_pid, raw in _EXIT_LINE.findall(text)
                if int(logged_pid) == pid]
    if not statuses:
        return None
    status = statuses[-1]
    if os.WIFSIGNALED(status):
        return ExitStatus.killed_by(os.WTERMSIG(status))
    if os.WIFEXITED(status):
        return ExitStatus(os.WEXITSTATUS(status))
    return None


def waiter_failure(text: str, waiter_pid: int) -> str | None:
    """The error the waiter ``waiter_pid`` logged (in its ``--debug-log``) if it failed."""
    errors = [message for pid, message in _FATAL_LINE.findall(text) if int(pid) == waiter_pid]
    return errors[-1] if errors else None


def start_failure(stderr: str) -> str:
    """Why ``runsc exec`` could not start a command, without runsc's own wording.

    runsc nests its errors (``executing processes for container: executing
    command "nope" in sandbox: no such file or directory``): the innermost
    is the kernel's reason, which is what a user can act on.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "the runtime gave no reason"
    reason = lines[-1].rsplit(": ", 1)[-1].strip()
    if reason == "try again":  # EAGAIN from clone: the task limit (runsc_spec.tasks_limit)
        return "resource temporarily unavailable (the sandbox runs as many processes as it may)"
    return reason


def without_waiter_error(source: asyncio.StreamReader, pid: int
                         ) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """The command's stderr as the command wrote it: ``source`` less a last line that is
    the waiter's error about ``pid`` (the command's pid in the sandbox). Everything else
    passes as soon as it cannot be the start of that line. The task relays until EOF."""
    relayed = asyncio.StreamReader()
    prefix = f"waiting on pid {pid}: ".encode()

    async def relay() -> None:
        held = b""
        try:
            while chunk := await source.read(_READ_CHUNK):
                held += chunk
                last_line = held.rfind(b"\n", 0, len(held) - 1) + 1
                tail = held[last_line:]
                if len(tail) <= _MAX_MESSAGE and (tail.startswith(prefix) or prefix.startswith(tail)):
                    relayed.feed_data(held[:last_line])
                    held = tail
                else:
                    relayed.feed_data(held)
                    held = b""
            if held.startswith(prefix) and held.endswith(b"\n"):
                log.warning("runsc waiter of pid %s: %s", pid, held.decode(errors="replace").strip())
            elif held:
                relayed.feed_data(held)
        finally:
            relayed.feed_eof()

    return relayed, asyncio.ensure_future(relay())
