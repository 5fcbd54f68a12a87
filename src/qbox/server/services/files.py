"""Files in a sandbox: checked here (ownership, state, size cap), done by the sandbox's agent.

Contents are relayed as streams in both directions; nothing here holds a
whole file.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from qbox.core.errors import PayloadTooLargeError, ValidationError
from qbox.server.agents import FileStream, WriteOptions
from qbox.server.services.context import ServiceContext
from qbox.server.principal import Principal
from qbox.server.services.sandboxes import SandboxService


_MODE_RE = re.compile(r"^(0o)?[0-7]{1,4}$")


def _required(path: str | None) -> str:
    if not path:
        raise ValidationError.for_fields({"path": "is required"})
    return path


def _octal(mode: str) -> str:
    if not _MODE_RE.match(mode):
        raise ValidationError.for_fields({"mode": f"{mode!r} is not an octal mode like 644"})
    return mode.removeprefix("0o")


class FileService:
    def __init__(self, ctx: ServiceContext, sandboxes: SandboxService) -> None:
        self.ctx = ctx
        self.sandboxes = sandboxes

    @property
    def max_bytes(self) -> int:
        return self.ctx.settings.max_file_bytes

    def check_length(self, length: int | None) -> None:
        """Refuse an announced body over the cap before any of it is read."""
        if length is not None and length > self.max_bytes:
            raise PayloadTooLargeError(
                f"the file is {length} bytes; this server accepts at most {self.max_bytes}",
                details={"maxBytes": self.max_bytes})

    async def stat(self, principal: Principal, sandbox_id: str, path: str | None,
                   user: str | None) -> dict[str, Any]:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda a: a.file_stat(sandbox_id, _required(path), user))

    async def list(self, principal: Principal, sandbox_id: str, path: str | None,
                   user: str | None) -> list[dict[str, Any]]:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda a: a.list_files(sandbox_id, _required(path), user))

    async def read(self, principal: Principal, sandbox_id: str, path: str | None,
                   user: str | None) -> FileStream:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda a: a.read_file(sandbox_id, _required(path), user))

    async def write(self, principal: Principal, sandbox_id: str, path: str | None,
                    content: AsyncIterator[bytes], options: WriteOptions) -> dict[str, Any]:

        def checked() -> WriteOptions:
            # After the access check (inside relay): a stranger learns nothing from a 400.
            self.check_length(options.length)
            return WriteOptions(_octal(options.mode), options.create_parents, options.append,
                                options.user, self.max_bytes, options.length)

        return await self.sandboxes.relay(
            principal, sandbox_id,
            lambda a: a.write_file(sandbox_id, _required(path), content, checked()))

    async def remove(self, principal: Principal, sandbox_id: str, path: str | None, recursive: bool,
                     user: str | None) -> None:
        await self.sandboxes.relay(
            principal, sandbox_id, lambda a: a.remove_file(sandbox_id, _required(path), recursive, user))

    async def mkdir(self, principal: Principal, sandbox_id: str, body: dict[str, Any]) -> None:
        await self.sandboxes.relay(principal, sandbox_id, lambda a: a.make_dir(sandbox_id, body))

    async def rename(self, principal: Principal, sandbox_id: str, body: dict[str, Any]) -> None:
        await self.sandboxes.relay(principal, sandbox_id,
                                   lambda a: a.rename_file(sandbox_id, body))
