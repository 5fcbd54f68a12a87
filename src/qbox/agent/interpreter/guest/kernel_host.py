"""The kernel host: runs Jupyter kernels inside a sandbox for the agent.

Speaks docs/kernel-host-protocol.md on stdin/stdout (one JSON object per
line); stderr is its log. It runs inside the sandbox with the image's own
python3, so it uses only the standard library and jupyter_client 7.4 (Debian
bookworm's), and never imports qbox.

Kernels talk to it over ZeroMQ ``ipc`` sockets in a private directory, so a
sandbox without networking (not even loopback) can still run them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

MAX_LINE = 64 * 1024 * 1024
START_TIMEOUT = 60.0
INTERRUPT_GRACE = 2.0
POLL = 0.2
SHUTDOWN_WAIT = 2.0
LOG_TAIL = 2000
# Jupyter messages carry these base64-encoded already; everything else is text or JSON.
BINARY_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf"})
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def log(message: str) -> None:
    print(f"kernel_host: {message}", file=sys.stderr, flush=True)


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


class KernelHost:
    def __init__(self, out_fd: int, workdir: str) -> None:
        self.out_fd = out_fd
        self.workdir = workdir
        self.specs = KernelSpecManager()
        self.contexts: dict[str, Context] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # Executions by request id, from their request until ``done`` (``cancel`` finds them).
        self.executions: dict[int, Execution] = {}

    # -- output -----------------------------------------------------------

    def emit(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode("ascii")
        view = memoryview(data)
        while view:
            written = os.write(self.out_fd, view)
            view = view[written:]

    def fail(self, request_id: Any, code: str, message: str) -> None:
        self.emit({"id": request_id, "event": "fail", "code": code, "message": message})

    # -- requests ---------------------------------------------------------

    def kernel_list(self) -> list[dict[str, str]]:
        kernels = []
        specs = self.specs.get_all_specs()  # type: ignore[no-untyped-call]
        for name, info in sorted(specs.items()):
            spec = info.get("spec", {})
            kernels.append(
                {"name": name, "language": spec.get("language", ""), "displayName": spec.get("display_name", name)}
            )
        return kernels

    def dispatch(self, line: bytes) -> None:
        request_id = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RequestError("invalid_request", "a request must be a JSON object")
            request_id = request.get("id")
            if not isinstance(request_id, int) or isinstance(request_id, bool):
                request_id = None
                raise RequestError("invalid_request", "a request needs an integer id")
            handler = {
                "kernels": self.op_kernels,
                "start": self.op_start,
                "execute": self.op_execute,
                "restart": self.op_restart,
                "stop": self.op_stop,
                "state": self.op_state,
                "cancel": self.op_cancel,
            }.get(request.get("op"))  # type: ignore[arg-type]
            if handler is None:
                raise RequestError("invalid_request", f"unknown op {request.get('op')!r}")
        except (ValueError, RequestError) as exc:
            code, message = (exc.code, exc.message) if isinstance(exc, RequestError) else ("invalid_request", str(exc))
            self.fail(request_id, code, message)
            return
        task = asyncio.get_running_loop().create_task(self._run(handler, request_id, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, handler: Any, request_id: int, request: dict[str, Any]) -> None:
        try:
            await handler(request_id, request)
        except RequestError as exc:
            self.fail(request_id, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's bug must not take the host down
            log(f"request {request_id} failed: {exc!r}")
            self.fail(request_id, "internal", f"{type(exc).__name__}: {exc}")

    async def op_kernels(self, request_id: int, request: dict[str, Any]) -> None:
        self.emit({"id": request_id, "event": "ok", "kernels": self.kernel_list()})

    async def op_state(self, request_id: int, request: dict[str, Any]) -> None:
        contexts = [{"context": c.id, "kernel": c.kernel, "state": c.state} for c in self.contexts.values()]
        self.emit({"id": request_id, "event": "ok", "contexts": contexts})

    async def op_start(self, request_id: int, request: dict[str, Any]) -> None:
        context_id = _string(request, "context")
        kernel = _string(request, "kernel")
        cwd = _string(request, "cwd")
        env = _env(request)
        try:
            spec = self.specs.get_kernel_spec(kernel)  # type: ignore[no-untyped-call]
        except NoSuchKernel:
            raise RequestError("language_not_supported", f"no kernel named {kernel!r}") from None
        if context_id in self.contexts:
            raise RequestError("conflict", f"context {context_id!r} exists")
        slot = uuid.uuid4().hex[:8]
        manager = AsyncKernelManager(  # type: ignore[no-untyped-call]
            kernel_name=kernel,
            kernel_spec_manager=self.specs,
            transport="ipc",
            ip=os.path.join(self.workdir, slot),
            connection_file=os.path.join(self.workdir, f"{slot}.json"),
        )
        manager.shutdown_wait_time = SHUTDOWN_WAIT
        context = Context(context_id, kernel, spec.language, manager, os.path.join(self.workdir, f"{slot}.log"))
        self.contexts[context_id] = context
        kernel_env = {**os.environ, **env}
        if spec.language == "python" and "MPLBACKEND" not in env:
            # The image sets MPLBACKEND=Agg for scripts; in a kernel, figures
            # should come back as display_data, which the inline backend does.
            kernel_env["MPLBACKEND"] = INLINE_BACKEND
        try:
            context.log_file = open(context.log_path, "ab")  # noqa: SIM115 (closed by _dispose)
            await manager.start_kernel(
                cwd=cwd,
                env=kernel_env,
                stdin=subprocess.DEVNULL,
                stdout=context.log_file,
                stderr=context.log_file,
            )
            context.client = manager.client()
            context.client.start_channels()
            await asyncio.wait_for(context.client.wait_for_ready(timeout=START_TIMEOUT), START_TIMEOUT + 5)
        except Exception as exc:  # noqa: BLE001 - jupyter_client raises anything; all mean "did not start"
            self.contexts.pop(context_id, None)
            await _dispose(context)
            tail = context.log_tail()
            raise RequestError(
                "kernel_start_failed", f"kernel {kernel!r} did not start: {exc}" + (f"\n{tail}" if tail else "")
            ) from None
        context.state = "idle"
        self.emit({"id": request_id, "event": "ok", "context": context_id, "kernel": kernel, "language": spec.language})

    def _context(self, request: dict[str, Any]) -> Context:
        context_id = _string(request, "context")
        context = self.contexts.get(context_id)
        if context is None:
            raise RequestError("context_not_found", f"no context {context_id!r}")
        return context

    async def op_restart(self, request_id: int, request: dict[str, Any]) -> None:
        context = self._context(request)
        if context.state == "starting":
            raise RequestError("conflict", f"context {context.id!r} is starting")
        context.generation += 1
        context.state = "starting"
        try:
            await context.manager.restart_kernel(now=True)
            await asyncio.wait_for(context.client.wait_for_ready(timeout=START_TIMEOUT), START_TIMEOUT + 5)
        except Exception as exc:  # noqa: BLE001 - as in op_start
            context.state = "dead"
            raise RequestError("kernel_start_failed", f"restart failed: {exc}\n{context.log_tail()}") from None
        context.state = "idle"
        self.emit({"id": request_id, "event": "ok", "context": context.id, "kernel": context.kernel})

    async def op_stop(self, request_id: int, request: dict[str, Any]) -> None:
        context = self._context(request)
        self.contexts.pop(context.id, None)
        context.generation += 1
        context.state = "dead"
        await _dispose(context)
        self.emit({"id": request_id, "event": "ok", "context": context.id})

    async def op_execute(self, request_id: int, request: dict[str, Any]) -> None:
        context = self._context(request)
        code = _string(request, "code", allow_empty=True)
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0):
            raise RequestError("invalid_request", "timeout must be a non-negative number of seconds")
        env = _env(request)
        execution = Execution(self, context, request_id)
        self.executions[request_id] = execution
        try:
            async with context.lock:
                if execution.cancelled:  # its caller left while it waited for the kernel
                    execution.emit({"event": "done", "executionMs": 0, "timedOut": False,
                                    "kernelDied": False, "cancelled": True})
                    return
                if context.id not in self.contexts:
                    raise RequestError("context_not_found", f"context {context.id!r} was stopped")
                if context.state == "dead":
                    raise RequestError("context_dead", f"the kernel of context {context.id!r} died; restart it")
                if context.state == "starting":
                    raise RequestError("conflict", f"context {context.id!r} is restarting")
                context.state = "busy"
                execution.generation = context.generation
                try:
                    await execution.run(code, timeout, env)
                finally:
                    if context.state == "busy":
                        context.state = "idle"
        finally:
            self.executions.pop(request_id, None)

    async def op_cancel(self, request_id: int, request: dict[str, Any]) -> None:
        target = request.get("request")
        if not isinstance(target, int) or isinstance(target, bool):
            raise RequestError("invalid_request", "request must be the integer id of an execute")
        execution = self.executions.get(target)
        if execution is not None:
            execution.cancelled = True
        self.emit({"id": request_id, "event": "ok", "found": execution is not None})

    # -- lifecycle --------------------------------------------------------

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        contexts = list(self.contexts.values())
        self.contexts.clear()
        await asyncio.gather(*(_dispose(c) for c in contexts), return_exceptions=True)


class Execution:
    """One ``execute`` request: env setup, the code, iopub relay, env restore."""

    def __init__(self, host: KernelHost, context: Context, request_id: int) -> None:
        self.host = host
        self.context = context
        self.request_id = request_id
        self.generation = context.generation
        self.restarted = False
        # Set by ``cancel``: the kernel is interrupted as on a timeout.
        self.cancelled = False

    def emit(self, event: dict[str, Any]) -> None:
        self.host.emit({"id": self.request_id, **event})

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
            await context.manager.restart_kernel(now=True)
            await asyncio.wait_for(context.client.wait_for_ready(timeout=START_TIMEOUT), START_TIMEOUT + 5)
        except Exception as exc:  # noqa: BLE001 - as in op_start
            log(f"context {context.id}: restart after the interrupt failed: {exc!r}")
            context.state = "dead"
            return why
        context.state = "busy"
        return why


def _string(request: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = request.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise RequestError("invalid_request", f"{name} must be a non-empty string")
    return value


def _env(request: dict[str, Any]) -> dict[str, str]:
    env = request.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise RequestError("invalid_request", "env must be an object of strings")
    for name in env:
        if not _ENV_NAME_RE.fullmatch(name):
            raise RequestError("invalid_request", f"env name {name!r} is not a valid variable name")
    return env


async def _dispose(context: Context) -> None:
    if context.client is not None:
        context.client.stop_channels()
    try:
        if context.manager.has_kernel:
            await context.manager.shutdown_kernel(now=context.state in ("dead", "busy"))
    except Exception as exc:  # noqa: BLE001 - a kernel that will not stop gets killed below
        log(f"context {context.id}: shutdown: {exc!r}")
        with contextlib.suppress(Exception):
            await context.manager.provisioner.kill()  # type: ignore[union-attr]
    if context.log_file is not None:
        context.log_file.close()


async def read_requests(host: KernelHost) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        try:
            line = await reader.readline()
        except ValueError:
            host.fail(None, "invalid_request", f"request line over {MAX_LINE} bytes")
            continue
        if not line:
            return
        if line.strip():
            host.dispatch(line)


async def main() -> None:
    # Protocol lines go to a private copy of stdout; fd 1 becomes stderr so
    # nothing else (a library's print, a kernel child) can write onto it.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    workdir = tempfile.mkdtemp(prefix="qbox-kh-")
    host = KernelHost(out_fd, workdir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    host.emit({"event": "ready", "kernels": host.kernel_list()})
    reading = loop.create_task(read_requests(host))
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reading.cancel()
        stopping.cancel()
        await host.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
