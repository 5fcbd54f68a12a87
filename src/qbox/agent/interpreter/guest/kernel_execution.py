"""One ``execute`` request of the kernel host: env setup, the code, iopub relay, env restore.

Guest side (see kernel_host.py): standard library and jupyter_client only.
Every MIME value goes out as base64 of its raw bytes, and a timeout or a
cancel interrupts the kernel (restarting it if the interrupt is ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
import shlex
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

from kernel_context import Context, log

INTERRUPT_GRACE = 2.0
POLL = 0.2
# Jupyter messages carry these base64-encoded already; everything else is text or JSON.
BINARY_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf"})

Emit = Callable[[dict[str, Any]], None]


def encode_bundle(data: dict[str, Any]) -> dict[str, str]:
    """Every MIME value as base64 of its raw bytes (see the protocol's "Execute events")."""
    out = {}
    for mime, value in data.items():
        if mime in BINARY_MIMES and isinstance(value, str):
            compact = "".join(value.split())
            try:
                base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                pass
            else:
                out[mime] = compact
                continue
        if mime.endswith("json") or not isinstance(value, str):
            raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        else:
            raw = value.encode("utf-8", "surrogatepass")
        out[mime] = base64.b64encode(raw).decode("ascii")
    return out


def env_code(language: str, env: dict[str, str]) -> tuple[str, str] | None:
    """Silent code to set ``env`` before an execution and to restore it after, or None."""
    if not env:
        return None
    if language == "python":
        values = json.dumps(env)
        setup = (
            "import os as __qbox_os\n"
            f"__qbox_saved_env = {{k: __qbox_os.environ.get(k) for k in {values}}}\n"
            f"__qbox_os.environ.update({values})\n"
        )
        restore = (
            "for __qbox_k, __qbox_v in __qbox_saved_env.items():\n"
            "    if __qbox_v is None:\n"
            "        __qbox_os.environ.pop(__qbox_k, None)\n"
            "    else:\n"
            "        __qbox_os.environ[__qbox_k] = __qbox_v\n"
            "del __qbox_saved_env, __qbox_os\n"
        )
        return setup, restore
    if language == "bash":
        setup_lines, restore_lines = [], []
        for name, value in env.items():
            setup_lines.append(
                f'if [ -n "${{{name}+x}}" ]; then __qbox_had_{name}=1; __qbox_old_{name}="${name}"; '
                f"else __qbox_had_{name}=0; fi; export {name}={shlex.quote(value)}"
            )
            restore_lines.append(
                f'if [ "$__qbox_had_{name}" = 1 ]; then export {name}="$__qbox_old_{name}"; '
                f"else unset {name}; fi; unset __qbox_had_{name} __qbox_old_{name}"
            )
        return "\n".join(setup_lines), "\n".join(restore_lines)
    return None


class Execution:
    """One ``execute`` request: env setup, the code, iopub relay, env restore."""

    def __init__(self, emit: Emit, context: Context, request_id: int) -> None:
        self._emit = emit
        self.context = context
        self.request_id = request_id
        self.generation = context.generation
        self.restarted = False
        # Set by ``cancel``: the kernel is interrupted as on a timeout.
        self.cancelled = False

    def emit(self, event: dict[str, Any]) -> None:
        self._emit({"id": self.request_id, **event})

    async def run(self, code: str, timeout: float | None, env: dict[str, str]) -> None:
        started = time.monotonic()
        outcome = "ok"
        env_steps = env_code(self.context.language, env)
        if env_steps is not None:
            outcome = await self._silent(env_steps[0])
        if outcome == "ok":
            msg_id = self.context.client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
            outcome = await self._relay(msg_id, timeout)
        if outcome in ("ok", "timed_out", "cancelled") and env_steps is not None and not self.restarted:
            # An interrupted kernel keeps its state, so it gets its environment
            # back; a restarted one (a new generation) never had ours.
            await self._silent(env_steps[1])
        done = {
            "event": "done",
            "executionMs": int((time.monotonic() - started) * 1000),
            "timedOut": outcome == "timed_out",
            "kernelDied": outcome == "died",
        }
        if outcome == "cancelled":
            done["cancelled"] = True
        self.emit(done)

    async def _silent(self, code: str) -> str:
        msg_id = self.context.client.execute(code, silent=True, store_history=False, allow_stdin=False)
        while True:
            if await self._gone():
                return "died"
            try:
                reply = await self.context.client.get_shell_msg(timeout=POLL)
            except Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return "ok"

    async def _gone(self) -> bool:
        """True (having said why) once the kernel died or was restarted under us."""
        context = self.context
        if context.generation != self.generation:
            self._died("the kernel was restarted or stopped during the execution")
            return True
        if not await context.manager.is_alive():
            self._died(await context.death_note())
            context.state = "dead"
            return True
        return False

    def _died(self, how: str) -> None:
        self.emit({"event": "error", "error": {"name": "KernelDied", "value": how, "traceback": []}})

    async def _relay(self, msg_id: str, timeout: float | None) -> str:
        client = self.context.client
        deadline = None if timeout is None else time.monotonic() + timeout
        # ipykernel ignores SIGINT until it runs a request: an interrupt sent before our
        # ``execute_input`` could be lost (then the kernel would be restarted, its state
        # gone). So it waits for that, or for INTERRUPT_GRACE from a kernel that never says.
        running = False
        stop_at: float | None = None
        interrupted_at: float | None = None
        why = "ok"
        while True:
            try:
                msg = await client.get_iopub_msg(timeout=POLL)
            except Empty:
                msg = None
            if msg is not None and msg.get("parent_header", {}).get("msg_id") == msg_id:
                running = running or msg.get("msg_type") == "execute_input"
                if self._relay_one(msg):
                    break
            elif msg is None and await self._gone():
                return "died"
            # Checked after every message too: a cell that prints without pause still stops.
            now = time.monotonic()
            if stop_at is None and (self.cancelled or (deadline is not None and now >= deadline)):
                why = "cancelled" if self.cancelled else "timed_out"
                stop_at = now
            if interrupted_at is None and stop_at is not None and (running or now >= stop_at + INTERRUPT_GRACE):
                log(f"context {self.context.id}: {why.replace('_', ' ')}, interrupting")
                await self.context.manager.interrupt_kernel()
                interrupted_at = now
            elif interrupted_at is not None and now >= interrupted_at + INTERRUPT_GRACE:
                log(f"context {self.context.id}: interrupt ignored, restarting")
                return await self._restart_after_interrupt(why)
        await self._drain_reply(msg_id)
        return why

    def _relay_one(self, msg: dict[str, Any]) -> bool:
        """Relay one iopub message of our execution; True when the kernel went idle."""
        kind = msg.get("msg_type")
        content = msg.get("content", {})
        if kind == "stream":
            self.emit({"event": "stream", "stream": content.get("name", "stdout"), "text": content.get("text", "")})
        elif kind in ("display_data", "update_display_data"):
            self.emit({"event": "display", "data": encode_bundle(content.get("data", {}))})
        elif kind == "execute_result":
            self.emit({"event": "result", "data": encode_bundle(content.get("data", {}))})
        elif kind == "error":
            error = {
                "name": str(content.get("ename", "")),
                "value": str(content.get("evalue", "")),
                "traceback": [str(line) for line in content.get("traceback", [])],
            }
            self.emit({"event": "error", "error": error})
        elif kind == "status" and content.get("execution_state") == "idle":
            return True
        return False

    async def _drain_reply(self, msg_id: str) -> None:
        # The execute_reply follows (or just precedes) idle; take it off the
        # shell queue so it does not pile up there.
        deadline = time.monotonic() + INTERRUPT_GRACE
        while time.monotonic() < deadline:
            try:
                reply = await self.context.client.get_shell_msg(timeout=POLL)
            except Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return

    async def _restart_after_interrupt(self, why: str) -> str:
        context = self.context
        context.generation += 1
        self.generation = context.generation
        self.restarted = True
        context.state = "starting"
        what = "was cancelled" if why == "cancelled" else "timed out"
        self.emit(
            {
                "event": "error",
                "error": {
                    "name": "TimeoutError",
                    "value": f"the execution {what} and the kernel ignored the interrupt; "
                    "it was restarted and its state is lost",
                    "traceback": [],
                },
            }
        )
        try:
            await context.restart()
        except Exception as exc:  # noqa: BLE001 - jupyter_client raises anything; all mean "did not start"
            log(f"context {context.id}: restart after the interrupt failed: {exc!r}")
            context.state = "dead"
            return why
        context.state = "busy"
        return why
