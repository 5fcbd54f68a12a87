"""The kernel host: runs Jupyter kernels inside a sandbox for the agent.

Speaks docs/kernel-host-protocol.md on stdin/stdout (one JSON object per
line); stderr is its log. It runs inside the sandbox with the image's own
python3, so it uses only the standard library and jupyter_client 7.4 (Debian
bookworm's), and never imports qbox. Its sibling modules (kernel_context,
kernel_execution) arrive with it in the guest directory.

Kernels talk to it over ZeroMQ ``ipc`` sockets in a private directory, so a
sandbox without networking (not even loopback) can still run them.
"""

from __future__ import annotations

import os
import sys

# The siblings are found from this file's directory even when the image's
# environment says not to put a script's directory on sys.path (PYTHONSAFEPATH).
# Nothing is written there: the guest directory is shared read-only.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

import asyncio  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: E402
from jupyter_core.paths import jupyter_path  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from jupyter_client.provisioning.factory import KernelProvisionerFactory  # noqa: E402
from kernel_context import Context, RequestError, log  # noqa: E402
from kernel_execution import Execution  # noqa: E402

MAX_LINE = 64 * 1024 * 1024
SHUTDOWN_WAIT = 2.0
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GuestSpecs(KernelSpecManager):
    """The kernelspecs without importing IPython or ipykernel into the host (≈0.6 s of a
    sandbox's first code call): jupyter_client looks up IPython's directory only for a
    ``~/.ipython/kernels`` and ipykernel only for a ``python3`` spec it would build itself."""

    def _kernel_dirs_default(self) -> list[str]:
        ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
        return [*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")]

    def _get_kernel_spec_by_name(self, kernel_name: str, resource_dir: str) -> Any:
        if not os.path.isfile(os.path.join(resource_dir, "kernel.json")):
            # ipykernel's own python3, found with no kernelspec installed: it builds it.
            return super()._get_kernel_spec_by_name(kernel_name, resource_dir)  # type: ignore[no-untyped-call]
        spec = self.kernel_spec_class.from_resource_dir(resource_dir)  # type: ignore[no-untyped-call]
        if not KernelProvisionerFactory.instance(parent=self.parent).is_provisioner_available(spec):
            raise NoSuchKernel(kernel_name)  # type: ignore[no-untyped-call]
        return spec


class KernelHost:
    def __init__(self, out_fd: int, workdir: str) -> None:
        self.out_fd = out_fd
        self.workdir = workdir
        self.specs = GuestSpecs()
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
            context.log_file = open(context.log_path, "ab")  # noqa: SIM115 (closed by dispose)
            await manager.start_kernel(
                cwd=cwd,
                env=kernel_env,
                stdin=subprocess.DEVNULL,
                stdout=context.log_file,
                stderr=context.log_file,
            )
            context.client = manager.client()
            context.client.start_channels()
            await context.wait_ready()
        except Exception as exc:  # noqa: BLE001 - jupyter_client raises anything; all mean "did not start"
            self.contexts.pop(context_id, None)
            await context.dispose()
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
            await context.restart()
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
        await context.dispose()
        self.emit({"id": request_id, "event": "ok", "context": context.id})

    async def op_execute(self, request_id: int, request: dict[str, Any]) -> None:
        context = self._context(request)
        code = _string(request, "code", allow_empty=True)
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0):
            raise RequestError("invalid_request", "timeout must be a non-negative number of seconds")
        env = _env(request)
        execution = Execution(self.emit, context, request_id)
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
        await asyncio.gather(*(c.dispose() for c in contexts), return_exceptions=True)


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
