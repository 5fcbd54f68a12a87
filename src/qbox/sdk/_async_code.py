"""``sandbox.code_contexts`` and ``run_code_stream`` events for ``AsyncSandbox``: as in ``_code``, awaited."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator

from qbox.sdk import _code_ops as ops
from qbox.sdk._code_models import CodeContext, CodeEvent, CodeLanguage
from qbox.sdk._code_ops import ContextRef, ExecuteRequest
from qbox.sdk._transport import AsyncConnection


async def astream_events(
    connection: AsyncConnection, sandbox_id: str, request: ExecuteRequest
) -> AsyncIterator[CodeEvent]:
    """The execution's events as they arrive; the stream is closed if iteration stops early."""
    cursor = await connection.run(ops.open_events(connection.api, sandbox_id, request))
    try:
        while not cursor.finished:
            for event in await connection.run(ops.next_events(cursor)):
                yield event
    finally:
        await connection.run(ops.close_events(cursor))


class AsyncCodeContexts:
    """The interpreter contexts of one sandbox (``sandbox.code_contexts``): each keeps its own
    variables and imports between ``run_code`` calls."""

    def __init__(self, connection: AsyncConnection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    async def create(self, language: str = "python", *, cwd: str | None = None) -> CodeContext:
        """A fresh context for ``language`` (a name or alias), starting in ``cwd``."""
        return await self._conn.run(ops.create_context(self._conn.api, self._sandbox_id, language, cwd))

    async def list(self) -> builtins.list[CodeContext]:
        return await self._conn.run(ops.list_contexts(self._conn.api, self._sandbox_id))

    async def get(self, context: ContextRef) -> CodeContext:
        """One context as it is now; ``ContextNotFoundError`` if there is none by that id."""
        return await self._conn.run(ops.get_context(self._conn.api, self._sandbox_id, context))

    async def restart(self, context: ContextRef) -> CodeContext:
        """Restart the context's interpreter: its state is lost, its id stays."""
        return await self._conn.run(ops.restart_context(self._conn.api, self._sandbox_id, context))

    async def remove(self, context: ContextRef) -> None:
        """Shut the context's interpreter down."""
        await self._conn.run(ops.remove_context(self._conn.api, self._sandbox_id, context))

    async def languages(self) -> builtins.list[CodeLanguage]:
        """The languages the sandbox's interpreter runs."""
        return await self._conn.run(ops.list_languages(self._conn.api, self._sandbox_id))
