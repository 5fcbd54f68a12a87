"""``sandbox.envs`` for ``AsyncSandbox``: the same surface as ``_envs``, awaited.

Changes apply to what starts afterwards: commands, shells and code
contexts, and every later execution of a kernel already running.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Mapping

from qbox.sdk import _env_ops as ops
from qbox.sdk._env_ops import DotenvResult, EnvVar
from qbox.sdk._transport import AsyncConnection


class AsyncEnvs:
    """The envs of one sandbox: the template's, the sandbox's own (``user``) and the
    platform's ``QBOX_*`` (``system``), the sandbox's winning over the template's."""

    def __init__(self, connection: AsyncConnection, sandbox_id: str) -> None:
        self._conn = connection
        self._sandbox_id = sandbox_id

    async def list(self, *, mask: bool = False) -> builtins.list[EnvVar]:
        """Every env once, with its source; ``mask=True`` shows secret values as ``MASK``."""
        return await self._conn.run(ops.list_envs(self._conn.api, self._sandbox_id, mask))

    async def get_all(self, *, mask: bool = False) -> dict[str, str]:
        return {env.key: env.value for env in await self.list(mask=mask)}

    async def get(self, key: str, default: str | None = None) -> str | None:
        return (await self.get_all()).get(key, default)

    async def set(self, envs: Mapping[str, str] | None = None, *,
                  secret: bool | Iterable[str] = False, **more: str) -> None:
        """Set these envs, leaving the others alone. ``secret`` marks all of them (True) or the
        keys it names as secret (masked in listings)."""
        merged = {**(envs or {}), **more}
        if merged:
            await self._conn.run(ops.set_envs(self._conn.api, self._sandbox_id, merged, secret))

    async def set_all(self, envs: Mapping[str, str], *,
                      secret: bool | Iterable[str] = False) -> None:
        """``envs`` become all of the sandbox's own envs (the template's stay)."""
        await self._conn.run(ops.set_envs(self._conn.api, self._sandbox_id, envs, secret,
                                          replace=True))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._conn.run(ops.delete_envs(self._conn.api, self._sandbox_id, keys))

    async def clear(self) -> None:
        """Remove all of the sandbox's own envs (the template's and the platform's stay)."""
        await self.set_all({})

    async def upload_dotenv(self, source: str | os.PathLike[str]) -> DotenvResult:
        """Set the envs of a ``.env`` file (a path) or text; lines it cannot read are returned
        in ``rejected`` with their numbers, the rest apply."""
        return await self._conn.run(ops.upload_dotenv(self._conn.api, self._sandbox_id,
                                                      ops.dotenv_text(source)))
