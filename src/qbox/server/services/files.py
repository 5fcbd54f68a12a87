"""Files in a sandbox: checked here (ownership, state, size cap), done by the sandbox's agent.

Contents are relayed as streams in both directions; nothing here holds a
whole file. Paths are checked only after access is: a stranger learns nothing
from a 400.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from qbox.core.errors import PayloadTooLargeError, ValidationError
from qbox.protocol.files import FileEntry, FileQuery, FileStat, Mkdir, Rename, WriteQuery
from qbox.server.agent_client import FileStream
from qbox.server.principal import Principal
from qbox.server.services.context import ServiceContext
from qbox.server.services.sandboxes import SandboxService

_MODE_RE = re.compile(r"^(0o)?[0-7]{1,4}$")


def _query(path: str | None, user: str | None) -> FileQuery:
    if not path:
        raise ValidationError.for_fields({"path": "is required"})
    return FileQuery(path=path, user=user or None)


def _octal(mode: str) -> str:
    if not _MODE_RE.match(mode):
        raise ValidationError.for_fields({"mode": f"{mode!r} is not an octal mode like 644"})
    return mode.removeprefix("0o")


@dataclass(frozen=True)
class FileWrite:
    """How to write a file, as a client asked (``mode``: octal text, unchecked yet)."""

    mode: str = "644"
    create_parents: bool = True
    append: bool = False
    user: str | None = None
    # The body's length when the client announced it (lets the agent see it too).
    length: int | None = None


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
                   user: str | None) -> FileStat:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda agent: agent.files.stat(sandbox_id, _query(path, user)))

    async def list(self, principal: Principal, sandbox_id: str, path: str | None,
                   user: str | None) -> list[FileEntry]:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda agent: agent.files.list(sandbox_id, _query(path, user)))

    async def read(self, principal: Principal, sandbox_id: str, path: str | None,
                   user: str | None) -> FileStream:
        return await self.sandboxes.relay(
            principal, sandbox_id, lambda agent: agent.files.read(sandbox_id, _query(path, user)))

    async def write(self, principal: Principal, sandbox_id: str, path: str | None,
                    content: AsyncIterator[bytes], how: FileWrite) -> None:

        def checked() -> WriteQuery:
            query = _query(path, how.user)
            self.check_length(how.length)
            return WriteQuery(path=query.path, user=query.user, mode=_octal(how.mode),
                              create_parents=how.create_parents, append=how.append,
                              max_bytes=self.max_bytes)

        await self.sandboxes.relay(
            principal, sandbox_id,
            lambda agent: agent.files.write(sandbox_id, checked(), content, how.length))

    async def remove(self, principal: Principal, sandbox_id: str, path: str | None,
                     recursive: bool, user: str | None) -> None:
        await self.sandboxes.relay(
            principal, sandbox_id,
            lambda agent: agent.files.remove(sandbox_id, _query(path, user), recursive))

    async def mkdir(self, principal: Principal, sandbox_id: str, request: Mkdir) -> None:
        await self.sandboxes.relay(principal, sandbox_id,
                                   lambda agent: agent.files.mkdir(sandbox_id, request))

    async def rename(self, principal: Principal, sandbox_id: str, request: Rename) -> None:
        await self.sandboxes.relay(principal, sandbox_id,
                                   lambda agent: agent.files.rename(sandbox_id, request))
