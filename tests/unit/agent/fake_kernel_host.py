"""A stand-in kernel host speaking docs/kernel-host-protocol.md, for unit tests (stdlib only).

Its "kernels" run a tiny line language instead of Python, one command a line:
``print T`` / ``eprint T`` (stdout/stderr), ``display T``, ``result T``,
``raise NAME: VALUE``, ``sleep S``, ``incr`` / ``get`` (a counter that a
restart resets), ``env K`` (prints the execution's env value), ``cwd``,
``big N`` (N bytes on stdout), ``die`` (the kernel dies), ``exit_host``
(the whole host exits at once). ``cancel`` interrupts a running execution
(a ``KeyboardInterrupt`` error, then ``done`` with ``cancelled``) or drops a
queued one. Environment knobs: FAKE_READY_DELAY and
FAKE_START_DELAY (seconds), FAKE_KERNELS (the kernel list as JSON),
FAKE_NOISE (garbage lines before ready), FAKE_NO_READY (never ready),
FAKE_LOG (a file where each request's op is appended).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time

KERNELS = json.loads(os.environ.get("FAKE_KERNELS") or json.dumps([
    {"name": "python3", "language": "python", "displayName": "Python 3"},
    {"name": "bash", "language": "bash", "displayName": "Bash"},
]))


def out(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Kernel:
    def __init__(self, name: str, cwd: str) -> None:
        self.name, self.cwd = name, cwd
        self.counter = 0
        self.dead = False
        self.queue: asyncio.Queue[tuple[int, dict[str, object]]] = asyncio.Queue()
        # ``cancel``: the running execution (its id and task), and queued ones to skip.
        self.running: tuple[int, asyncio.Task[None]] | None = None
        self.cancelled: set[int] = set()
        self.worker = asyncio.create_task(self.work())

    def cancel(self, request_id: int) -> bool:
        if self.running is not None and self.running[0] == request_id:
            self.cancelled.add(request_id)
            self.running[1].cancel()
            return True
        if any(queued == request_id for queued, _ in self.queue._queue):  # type: ignore[attr-defined]
            self.cancelled.add(request_id)
            return True
        return False

    async def work(self) -> None:
        while True:
            request_id, request = await self.queue.get()
            await self.execute(request_id, request)
            self.running = None
            self.cancelled.discard(request_id)

    async def execute(self, request_id: int, request: dict[str, object]) -> None:
        if self.dead:
            out({"id": request_id, "event": "fail", "code": "context_dead",
                 "message": "the kernel died; restart the context"})
            return
        began = time.monotonic()
        timeout = request.get("timeout")
        if request_id in self.cancelled:  # cancelled while queued: never runs
            out({"id": request_id, "event": "done", "executionMs": 0, "timedOut": False,
                 "kernelDied": False, "cancelled": True})
            return
        run = asyncio.ensure_future(asyncio.wait_for(self.run(request_id, request), timeout))  # type: ignore[arg-type]
        self.running = (request_id, run)
        try:
            await run
        except asyncio.CancelledError:
            if request_id not in self.cancelled:
                raise
            out({"id": request_id, "event": "error", "error": {
                "name": "KeyboardInterrupt", "value": "", "traceback": []}})
            out({"id": request_id, "event": "done", "executionMs": 1, "timedOut": False,
                 "kernelDied": False, "cancelled": True})
            return
        except TimeoutError:
            out({"id": request_id, "event": "error", "error": {
                "name": "KeyboardInterrupt", "value": "", "traceback": []}})
            out({"id": request_id, "event": "done", "executionMs": 1, "timedOut": True,
                 "kernelDied": False})
            return
        except KernelDeath:
            self.dead = True
            out({"id": request_id, "event": "error", "error": {
                "name": "KernelDied", "value": "the kernel exited", "traceback": []}})
            out({"id": request_id, "event": "done", "executionMs": 1, "timedOut": False,
                 "kernelDied": True})
            return
        out({"id": request_id, "event": "done",
             "executionMs": int((time.monotonic() - began) * 1000), "timedOut": False,
             "kernelDied": False})

    async def run(self, request_id: int, request: dict[str, object]) -> None:
        env = request.get("env") or {}
        for line in str(request["code"]).splitlines():
            command, _, arg = line.partition(" ")
            if command == "print":
                out({"id": request_id, "event": "stream", "stream": "stdout", "text": arg + "\n"})
            elif command == "eprint":
                out({"id": request_id, "event": "stream", "stream": "stderr", "text": arg + "\n"})
            elif command == "display":
                out({"id": request_id, "event": "display", "data": {"text/plain": b64(arg)}})
            elif command == "result":
                out({"id": request_id, "event": "result", "data": {"text/plain": b64(arg)}})
            elif command == "raise":
                name, _, value = arg.partition(": ")
                out({"id": request_id, "event": "error", "error": {
                    "name": name, "value": value, "traceback": [f"Traceback: {name}"]}})
                return
            elif command == "sleep":
                await asyncio.sleep(float(arg))
            elif command == "incr":
                self.counter += 1
            elif command == "get":
                out({"id": request_id, "event": "result", "data": {"text/plain": b64(str(self.counter))}})
            elif command == "env":
                out({"id": request_id, "event": "stream", "stream": "stdout",
                     "text": str(env.get(arg, "<unset>")) + "\n"})  # type: ignore[union-attr]
            elif command == "cwd":
                out({"id": request_id, "event": "stream", "stream": "stdout", "text": self.cwd})
            elif command == "big":
                out({"id": request_id, "event": "stream", "stream": "stdout", "text": "x" * int(arg)})
            elif command == "die":
                raise KernelDeath
            elif command == "exit_host":
                sys.stderr.write("fatal: the host gives up\n")
                sys.stderr.flush()
                os._exit(3)

    def stop(self) -> None:
        self.worker.cancel()


class KernelDeath(Exception):
    pass


class Host:
    def __init__(self) -> None:
        self.kernels: dict[str, Kernel] = {}

    async def handle(self, request: dict[str, object]) -> None:
        request_id = int(request["id"])  # type: ignore[call-overload]
        op = request.get("op")
        if os.environ.get("FAKE_LOG"):
            with open(os.environ["FAKE_LOG"], "a") as log:
                log.write(f"{op} {request.get('context', '')}\n")
        context = str(request.get("context", ""))
        if op == "kernels":
            out({"id": request_id, "event": "ok", "kernels": KERNELS})
        elif op == "start":
            if context in self.kernels:
                out({"id": request_id, "event": "fail", "code": "conflict", "message": "exists"})
                return
            spec = next((k for k in KERNELS if k["name"] == request.get("kernel")), None)
            if spec is None:
                out({"id": request_id, "event": "fail", "code": "language_not_supported",
                     "message": f"no kernel {request.get('kernel')}"})
                return
            await asyncio.sleep(float(os.environ.get("FAKE_START_DELAY") or 0))
            self.kernels[context] = Kernel(str(spec["name"]), str(request.get("cwd")))
            out({"id": request_id, "event": "ok", "context": context, "kernel": spec["name"],
                 "language": spec["language"]})
        elif op == "execute":
            kernel = self.kernels.get(context)
            if kernel is None:
                out({"id": request_id, "event": "fail", "code": "context_not_found",
                     "message": f"no context {context}"})
                return
            kernel.queue.put_nowait((request_id, request))
        elif op in ("restart", "stop"):
            kernel = self.kernels.pop(context, None)
            if kernel is None:
                out({"id": request_id, "event": "fail", "code": "context_not_found",
                     "message": f"no context {context}"})
                return
            kernel.stop()
            if op == "restart":
                self.kernels[context] = Kernel(kernel.name, kernel.cwd)
            out({"id": request_id, "event": "ok"})
        elif op == "cancel":
            target = request.get("request")
            found = any(k.cancel(target) for k in self.kernels.values())  # type: ignore[arg-type]
            out({"id": request_id, "event": "ok", "found": found})
        elif op == "state":
            out({"id": request_id, "event": "ok", "contexts": [
                {"context": c, "kernel": k.name, "state": "dead" if k.dead else "idle"}
                for c, k in self.kernels.items()]})


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write(f"pid {os.getpid()}\n")
    if os.environ.get("FAKE_NOISE"):
        sys.stdout.write("not json\n[1, 2]\n{\"event\": \"stream\", \"id\": 999}\n")
        sys.stdout.flush()
    await asyncio.sleep(float(os.environ.get("FAKE_READY_DELAY") or 0))
    if os.environ.get("FAKE_NO_READY"):
        await asyncio.sleep(3600)
    out({"event": "ready", "kernels": KERNELS})
    host = Host()
    tasks = set()
    while line := await reader.readline():
        task = asyncio.create_task(host.handle(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sys.stderr.write("stdin closed: shutting down\n")
    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write("closed\n")


if __name__ == "__main__":
    asyncio.run(main())
