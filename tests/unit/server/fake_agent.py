"""An in-memory host agent for control-plane unit tests (no root, no runtime).

Commands really run, on the test machine, so outputs and exit codes are real;
sandboxes are just records.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from typing import Any

from qbox.core.errors import ProcessNotFoundError, QboxError, SandboxNotFoundError
from qbox.core.timefmt import to_wire, utcnow


class FakeAgent:
    def __init__(self) -> None:
        self.sandboxes: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, dict[int, dict[str, Any]]] = {}
        self.deleted: list[str] = []
        self.fail_create: QboxError | None = None
        self.create_delay = 0.0
        self._pids = itertools.count(100)
        self.closed = False

    async def health(self) -> dict[str, Any]:
        return {"version": "test", "runtime": "fake", "sandboxes": len(self.sandboxes)}

    async def import_image(self, ref: str, name: str) -> dict[str, Any]:
        return {"digest": "sha256:" + hashlib.sha256(ref.encode()).hexdigest(), "sizeBytes": 4096}

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

    async def start_command(self, sandbox_id: str, body: dict[str, Any]) -> dict[str, Any]:
        table = self._require(sandbox_id)
        pid = next(self._pids)
        result = await self._run(body)
        table[pid] = {"pid": pid, "command": [body["cmd"], *body.get("args", [])],
                      "startedAt": to_wire(utcnow()), "alive": False,
                      "exitCode": result["exitCode"], "signal": 0,
                      "stdout": result["stdout"], "stderr": result["stderr"]}
        return {"pid": pid, "startedAt": table[pid]["startedAt"]}

    def _command(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        table = self._require(sandbox_id)
        if pid not in table:
            raise ProcessNotFoundError(f"no process {pid}")
        return table[pid]

    async def list_commands(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k not in ("stdout", "stderr")}
                for c in self._require(sandbox_id).values()]

    async def command_status(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        command = self._command(sandbox_id, pid)
        return {k: v for k, v in command.items() if k not in ("stdout", "stderr")}

    async def command_logs(self, sandbox_id: str, pid: int) -> dict[str, Any]:
        command = self._command(sandbox_id, pid)
        return {"stdout": command["stdout"], "stderr": command["stderr"]}

    async def kill_command(self, sandbox_id: str, pid: int, signal: int) -> None:
        self._command(sandbox_id, pid)

    async def aclose(self) -> None:
        self.closed = True
