"""One kernel of the kernel host: its manager, client, log and state (guest side, see kernel_host.py).

Runs inside the sandbox next to kernel_host.py: standard library and
jupyter_client only, never qbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from jupyter_client.manager import AsyncKernelManager

START_TIMEOUT = 60.0
LOG_TAIL = 2000
# How long a kernel_info_request waits for its reply before it is sent again, and how long
# its iopub status messages may take to show the iopub socket is connected.
READY_POLL = 0.5
IOPUB_POLL = 0.2


class RequestError(Exception):
    """A request's ``fail`` answer: a protocol error code and its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def log(message: str) -> None:
    print(f"kernel_host: {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    id: str
    kernel: str
    language: str
    manager: AsyncKernelManager
    log_path: str
    state: str = "starting"
    client: Any = None
    # The kernel's stdout and stderr; open for the context's life, as restarts reuse it.
    log_file: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Bumped by restart/stop so a running execution knows its kernel is gone.
    generation: int = 0

    async def wait_ready(self) -> None:
        """Until the kernel answers a ``kernel_info_request`` and its iopub reaches us.

        jupyter_client's ``wait_for_ready`` does the same and then waits for 0.2 s of
        iopub silence, a fixed cost of every start; our executions ignore iopub messages
        that are not theirs, so what is left there is harmless."""
        await asyncio.wait_for(self._answered(), START_TIMEOUT + 5)

    async def _answered(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            msg_id = self.client.kernel_info()
            try:
                reply = await self.client.get_shell_msg(timeout=READY_POLL)
            except Empty:
                reply = None
            if reply is not None and reply.get("msg_type") == "kernel_info_reply" \
                    and await self._iopub_has(msg_id):
                return
            if not await self.manager.is_alive():
                raise RuntimeError("the kernel died before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kernel did not answer in {START_TIMEOUT:.0f} s")

    async def _iopub_has(self, msg_id: str) -> bool:
        """Whether the request's own iopub messages come (a late iopub connection loses them)."""
        deadline = time.monotonic() + IOPUB_POLL
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await self.client.get_iopub_msg(timeout=left)
            except Empty:
                return False
            if message.get("parent_header", {}).get("msg_id") == msg_id:
                return True
        return False

    async def restart(self) -> None:
        await self.manager.restart_kernel(now=True)
        await self.wait_ready()

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    async def death_note(self) -> str:
        process = getattr(self.manager.provisioner, "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return "the kernel died"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the kernel was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
        return f"the kernel exited with status {code}"

    async def dispose(self) -> None:
        """Shut the kernel down (killed if it will not stop) and close its log."""
        if self.client is not None:
            self.client.stop_channels()
        try:
            if self.manager.has_kernel:
                await self.manager.shutdown_kernel(now=self.state in ("dead", "busy"))
        except Exception as exc:  # noqa: BLE001 - a kernel that will not stop gets killed below
            log(f"context {self.id}: shutdown: {exc!r}")
            with contextlib.suppress(Exception):
                await self.manager.provisioner.kill()  # type: ignore[union-attr]
        if self.log_file is not None:
            self.log_file.close()
