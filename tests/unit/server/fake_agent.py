"""An in-memory host agent for control-plane unit tests (no root, no runtime).

Commands really run, on the test machine, so outputs and exit codes are real;
sandboxes are just records.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from qbox.agent.files import SandboxFiles
from qbox.core.errors import (
    ConflictError,
    ProcessNotFoundError,
    QboxError,
    SandboxNotFoundError,
    ValidationError,
)
from qbox.core.timefmt import to_wire, utcnow
from qbox.server.agents import FileStream, Relayed, ShellOptions, WriteOptions
from tests.unit.server.fake_interpreter import LANGUAGES, FakeInterpreter


# Bookkeeping of the fake, not part of a command's status.
_PRIVATE = ("stdout", "stderr", "body", "stdinData")


async def _lines(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for event in events:
        yield json.dumps(event).encode() + b"\n"


async def _no_close() -> None:
    pass


def _events(first: list[dict[str, Any]], output: dict[str, Any],
            exit_fields: dict[str, Any]) -> Relayed:
    """An NDJSON event stream as the agent sends it, from a finished command."""
    events = [*first, *({"type": name, "data": output[name]} for name in ("stdout", "stderr")
                        if output[name]), {"type": "exit", **exit_fields}]
    return Relayed(_lines(events), _no_close)


def _json(answer: dict[str, Any]) -> Relayed:
    """A JSON answer relayed in two pieces, as the agent streams it."""
    async def pieces() -> AsyncIterator[bytes]:
        text = json.dumps(answer).encode()
        yield text[:len(text) // 2]
        yield text[len(text) // 2:]
    return Relayed(pieces(), _no_close)


class FakeShell:
    """An agent's shell in memory: it echoes input as output and records resizes.

    Input ``exit N\r`` ends it with close 1000 ``exit N``; ``flood N\r`` makes N
    bytes of output, made only as they are read (``produced`` counts them).
    """

    FLOOD_CHUNK = 64 * 1024

    def __init__(self, sandbox_id: str, options: ShellOptions) -> None:
        self.sandbox_id = sandbox_id
        self.options = options
        self.frames: list[str | bytes] = []
        self.resizes: list[tuple[int, int]] = []
        self.produced = 0
        self.closed = False  # the control plane closed it
        self.close_code: int | None = None
        self.close_reason = ""
        # Cleared, input blocks as if the PTY were full.
        self.accepting = asyncio.Event()
        self.accepting.set()
        self._output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._flood = 0

    def end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._output.put_nowait(None)

    async def send(self, frame: str | bytes) -> None:
        await self.accepting.wait()
        if self.close_code is not None:
            return
        self.frames.append(frame)
        if isinstance(frame, bytes):
            data = frame.decode("utf-8", "replace")
        else:
            message = json.loads(frame)
            if message["type"] == "resize":
                self.resizes.append((message["cols"], message["rows"]))
                return
            data = message["data"]
        self._output.put_nowait(data.encode())
        if exit_match := re.fullmatch(r"exit (\d+)\r", data):
            self.end(1000, f"exit {exit_match[1]}")
        elif flood := re.fullmatch(r"flood (\d+)\r", data):
            self._flood += int(flood[1])

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._flood and self.close_code is None:
                size = min(self._flood, self.FLOOD_CHUNK)
                self._flood -= size
                self.produced += size
                yield b"y" * size
                continue
            chunk = await self._output.get()
            if chunk is None:
                return
            self.produced += len(chunk)
            yield chunk

    async def close(self) -> None:
        self.closed = True
        self.end(1000, "")

    async def __aenter__(self) -> FakeShell:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class FakeAgent:
    def __init__(self) -> None:
        self.sandboxes: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, dict[int, dict[str, Any]]] = {}
        self.deleted: list[str] = []
        self.fail_create: QboxError | None = None
        self.create_delay = 0.0
        self._pids = itertools.count(100)
        self.closed = False
        self.roots: dict[str, Path] = {}
        self.interpreters: dict[str, FakeInterpreter] = {}
        # What every image "holds": templates get a code interpreter from it.
        self.image_kernels = [{"name": "python3", "language": "python", "displayName": "Python 3"}]
        self.last_code_body: dict[str, Any] = {}
        self.read_chunk_bytes = 64 * 1024
        self.chunks_seen = 0
        self.shells: list[FakeShell] = []
        self.fail_shell: QboxError | None = None
        # A real agent ends a deleted sandbox's shells (SIGHUP: exit 129); this one may not.
        self.shells_survive_delete = False
        # Template builds: every request's body; the events a build sends (None: a default
        # success); while ``build_hold`` is clear, a build waits after its first event.
        self.builds: list[dict[str, Any]] = []
        self.build_events: list[dict[str, Any]] | None = None
        self.build_error: QboxError | None = None
        self.build_hold = threading.Event()
        self.build_hold.set()
        self.builds_cancelled = 0
        self.gc_calls: list[list[str]] = []
        # What /health reports the host can give (admission control); roomy unless a test says.
        self.capacity = {"vcpus": 64, "memoryMb": 256 * 1024, "diskTotalMb": 1024 * 1024,
                         "diskFreeMb": 1024 * 1024, "sandboxDisksMb": 0}

    async def health(self) -> dict[str, Any]:
        return {"version": "test", "runtime": "fake", "sandboxes": len(self.sandboxes),
                "capacity": dict(self.capacity)}

    async def import_image(self, ref: str, name: str) -> dict[str, Any]:
        return {"digest": "sha256:" + hashlib.sha256(ref.encode()).hexdigest(), "sizeBytes": 4096,
                "kernels": self.image_kernels}

    def default_build_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        digest = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        base = "sha256:" + hashlib.sha256(body["ref"].encode()).hexdigest()
        steps = body["steps"]
        lines = [f"pulling docker://{body['ref']}"]
        for n, step in enumerate(steps, 1):
            lines += [f"step {n}/{len(steps)}: {next(iter(step))}", f"step {n}/{len(steps)}: exit code 0"]
        lines.append(f"template ready: {digest}, 4 KB")
        pushed = f"docker://{body['push'].rsplit(':', 1)[0]}@{digest}" if body.get("push") else None
        return [*({"type": "log", "line": line} for line in lines),
                {"type": "result", "digest": digest, "sizeBytes": 4096, "kernels": self.image_kernels,
                 "baseDigest": base, "pushedRef": pushed}]

    async def build(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.builds.append(body)
        if self.build_error is not None:
            raise self.build_error
        scripted = self.build_events if self.build_events is not None else self.default_build_events(body)

        async def stream() -> AsyncGenerator[dict[str, Any], None]:
            try:
                for n, event in enumerate(scripted):
                    if n == 1:
                        while not self.build_hold.is_set():
                            await asyncio.sleep(0.01)
                    yield event
            except (asyncio.CancelledError, GeneratorExit):
                self.builds_cancelled += 1
                raise

        return stream()

    async def gc_images(self, keep: list[str]) -> dict[str, Any]:
        self.gc_calls.append(list(keep))
        return {"removed": [], "freedBytes": 0}

    async def create_sandbox(self, spec: dict[str, Any]) -> dict[str, Any]:
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if self.fail_create is not None:
            raise self.fail_create
        self.sandboxes[spec["id"]] = {"spec": spec, "status": "running"}
        self.commands[spec["id"]] = {}
        return {"id": spec["id"], "status": "running", "bootedAt": to_wire(utcnow())}

    async def list_sandboxes(self) -> list[dict[str, Any]]:
        return [{"id": k, "status": v["status"], "exitReason": v.get("exitReason")}
                for k, v in self.sandboxes.items()]

    async def delete_sandbox(self, sandbox_id: str) -> None:
        self.sandboxes.pop(sandbox_id, None)
        self.deleted.append(sandbox_id)
        for shell in self.shells:
            if shell.sandbox_id == sandbox_id and not self.shells_survive_delete:
                shell.end(1000, "exit 129")
        root = self.roots.pop(sandbox_id, None)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    # --- files: the real SandboxFiles over a temporary directory per sandbox ---

    def files(self, sandbox_id: str, user: str | None = None) -> SandboxFiles:
        self._require(sandbox_id)
        if user not in (None, "user", "root"):
            raise ValidationError.for_fields({"user": f"no user named {user!r}"})
        root = self.roots.get(sandbox_id)
        if root is None:
            root = self.roots[sandbox_id] = Path(tempfile.mkdtemp(prefix="qbox-fake-root-"))
            (root / "home" / "user").mkdir(parents=True)
        return SandboxFiles(root, home="/root" if user == "root" else "/home/user")

    async def file_stat(self, sandbox_id: str, path: str, user: str | None) -> dict[str, Any]:
        return self.files(sandbox_id, user).stat(path)

    async def list_files(self, sandbox_id: str, path: str,
                         user: str | None) -> list[dict[str, Any]]:
        return self.files(sandbox_id, user).list(path)

    async def read_file(self, sandbox_id: str, path: str, user: str | None) -> FileStream:
        handle, size = self.files(sandbox_id, user).open_read(path)

        async def chunks() -> AsyncIterator[bytes]:
            with handle:
                while chunk := handle.read(self.read_chunk_bytes):
                    yield chunk

        async def close() -> None:
            handle.close()

        return FileStream(size, chunks(), close)

    async def write_file(self, sandbox_id: str, path: str, content: AsyncIterator[bytes],
                         options: WriteOptions) -> dict[str, Any]:
        files = self.files(sandbox_id, options.user)
        operation = files.append if options.append else files.write
        self.chunks_seen = 0

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in content:
                self.chunks_seen += 1
                yield chunk

        return await operation(path, counted(), mode=int(options.mode.removeprefix("0o"), 8),
                               create_parents=options.create_parents,
                               max_bytes=options.max_bytes)

    async def remove_file(self, sandbox_id: str, path: str, recursive: bool,
                          user: str | None) -> None:
        self.files(sandbox_id, user).remove(path, recursive=recursive)

    async def make_dir(self, sandbox_id: str, body: dict[str, Any]) -> None:
        self.files(sandbox_id, body.get("user")).mkdir(body["path"], mode=body["mode"],
                                                       parents=body["parents"])

    async def rename_file(self, sandbox_id: str, body: dict[str, Any]) -> None:
        self.files(sandbox_id, body.get("user")).rename(body["src"], body["dst"])

    def _require(self, sandbox_id: str) -> dict[int, dict[str, Any]]:
        if sandbox_id not in self.sandboxes:
            raise SandboxNotFoundError(f"no sandbox {sandbox_id}")
        return self.commands[sandbox_id]

    async def _run(self, body: dict[str, Any]) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            body["cmd"], *body.get("args", []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin", **body.get("env", {})},
        )
        stdin = body.get("stdin")
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None),
                timeout=body.get("timeoutSeconds"),
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"stdout": "", "stderr": "", "exitCode": 137, "timedOut": True}
        return {"stdout": out.decode(), "stderr": err.decode(), "exitCode": proc.returncode,
                "timedOut": False}

    async def exec(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._require(sandbox_id)
        return await self._run(body)

    async def exec_relayed(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        return _json(await self.exec(sandbox_id, body))

    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        table = self._require(sandbox_id)
        pid = next(self._pids)
        command = {"pid": pid, "command": [body["cmd"], *body.get("args", [])],
                   "startedAt": to_wire(utcnow()), "alive": False, "exitCode": 0, "signal": 0,
                   "stdout": "", "stderr": ""}
        table[pid] = command
        if body.get("stdin") is True:
            # Runs once its stdin is closed, with everything written to it.
            command.update(alive=True, body=body, stdinData="")
        else:
            await self._finish(command, body)
        return {"pid": pid, "startedAt": command["startedAt"]}

    async def _finish(self, command: dict[str, Any], body: dict[str, Any]) -> None:
        result = await self._run(body)
        command.update(alive=False, exitCode=result["exitCode"], stdout=result["stdout"],
                       stderr=result["stderr"])

    async def write_stdin(self, sandbox_id: str, pid: int, body: dict[str, Any]) -> None:
        command = self._command(sandbox_id, pid)
        if "stdinData" not in command or not command["alive"]:
            raise ConflictError(f"process {pid} has no open stdin")
        command["stdinData"] += body.get("data", "")
        if body.get("close"):
            await self._finish(command, {**command["body"], "stdin": command["stdinData"]})

    def _command(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        table = self._require(sandbox_id)
        if pid not in table:
            raise ProcessNotFoundError(f"no process {pid}")
        return table[pid]

    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k not in _PRIVATE}
                for c in self._require(sandbox_id).values()]

    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        command = self._command(sandbox_id, pid)
        return {k: v for k, v in command.items() if k not in _PRIVATE}

    async def command_logs(self, sandbox_id: str, pid: int,
                           offsets: dict[str, int] | None = None) -> Relayed:
        return _json(self._logs(sandbox_id, pid, offsets))

    def _logs(self, sandbox_id: str, pid: int,
              offsets: dict[str, int] | None = None) -> dict[str, Any]:
        command = self._command(sandbox_id, pid)
        if not offsets:
            return {"stdout": command["stdout"], "stderr": command["stderr"]}
        out = offsets.get("stdoutOffset", offsets.get("offset", 0))
        err = offsets.get("stderrOffset", offsets.get("offset", 0))
        return {"stdout": command["stdout"][out:], "stderr": command["stderr"][err:],
                "stdoutNext": max(out, len(command["stdout"])),
                "stderrNext": max(err, len(command["stderr"]))}

    async def follow_command(self, sandbox_id: str, pid: int,
                             offsets: dict[str, int]) -> Relayed:
        command = self._command(sandbox_id, pid)
        logs = self._logs(sandbox_id, pid, offsets or {"offset": 0})
        return _events([], logs, {"exitCode": command["exitCode"], "signal": 0,
                                  "oomKilled": False})

    async def exec_stream(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        self._require(sandbox_id)
        result = await self._run(body)
        return _events([{"type": "started", "pid": next(self._pids)}], result,
                       {"exitCode": result["exitCode"], "signal": 0, "oomKilled": False,
                        "timedOut": result["timedOut"]})

    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None:
        self._command(sandbox_id, pid)

    async def open_shell(self, sandbox_id: str, options: ShellOptions) -> FakeShell:
        self._require(sandbox_id)
        if self.fail_shell is not None:
            raise self.fail_shell
        shell = FakeShell(sandbox_id, options)
        self.shells.append(shell)
        return shell

    # --- code interpreter: an in-process fake (fake_interpreter.py) ---

    def _interpreter(self, sandbox_id: str) -> FakeInterpreter:
        self._require(sandbox_id)
        return self.interpreters.setdefault(sandbox_id, FakeInterpreter())

    async def code_languages(self, sandbox_id: str) -> dict[str, Any]:
        self._interpreter(sandbox_id)
        return {"languages": LANGUAGES}

    async def code_contexts(self, sandbox_id: str) -> dict[str, Any]:
        return {"contexts": list(self._interpreter(sandbox_id).contexts.values())}

    async def create_code_context(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._interpreter(sandbox_id).create(body)

    async def restart_code_context(self, sandbox_id: str, context_id: str) -> dict[str, Any]:
        return self._interpreter(sandbox_id).restart(context_id)

    async def delete_code_context(self, sandbox_id: str, context_id: str) -> None:
        self._interpreter(sandbox_id).delete(context_id)

    async def code_execute(self, sandbox_id: str, body: dict[str, Any]) -> Relayed:
        self.last_code_body = body
        return Relayed(await self._interpreter(sandbox_id).execute(body), _no_close)

    async def aclose(self) -> None:
        self.closed = True
        for root in self.roots.values():
            shutil.rmtree(root, ignore_errors=True)
        self.roots.clear()
