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
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import AsyncKernelManager

START_TIMEOUT = 60.0
LOG_TAIL = 2000


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
        """Until the kernel answers a ``kernel_info_request`` (a hung client gets 5 s more)."""
        await asyncio.wait_for(self.client.wait_for_ready(timeout=START_TIMEOUT), START_TIMEOUT + 5)

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
